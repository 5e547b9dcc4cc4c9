"""Options every HTTP command of the ``minipanda`` CLI takes (server URL, token, home, --json), and the client
they make."""
from minipanda.server.home import home_dir


def client(args):
    """The /api/v1 client of the parsed ``--url``, ``--token-file`` and ``--home``."""
    from minipanda.cli.client import Client  # requests: imported by the commands that call the server, when they run

    return Client.from_settings(url=args.url, token_file=args.token_file, home=home_dir(args.home))


def add_client_options(parser, func, token="a bearer token"):
    """Add --url, --token-file, --home and --json to ``parser`` and make ``func`` its command; returns the parser."""
    parser.add_argument("--url", help="server URL (default $MINIPANDA_URL or http://127.0.0.1:25080)")
    parser.add_argument("--token-file", help=f"file holding {token} (default $MINIPANDA_TOKEN, else "
                                             "<home>/admin.token)")
    parser.add_argument("--home", help="minipanda home, for <home>/admin.token (default $MINIPANDA_HOME or "
                                       "~/.minipanda)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=func)
    return parser
