"""``minipanda queue list|show``: the server's queues as dispatch sees them, over the HTTP API (open reads)."""
import json

from minipanda.cli import options
from minipanda.cli.tables import print_table

COLUMNS = ["name", "status", "labels", "cores", "maxrss", "maxtime", "waiting", "running", "why"]


_client = options.client


def add_parsers(sub):
    """Add ``queue list`` and ``queue show`` to the ``minipanda`` parser's subcommands."""
    queue = sub.add_parser("queue", help="the server's queues: status, labels, resources, waiting jobs") \
        .add_subparsers(title="queue")
    qlist = queue.add_parser("list", help="every queue, one line each")
    qshow = queue.add_parser("show", help="one queue in full, with the queuedata pilots read")
    qshow.add_argument("name", help="the queue's name (its PanDA queue / computingSite)")
    for parser, func in ((qlist, cmd_queue_list), (qshow, cmd_queue_show)):
        parser.add_argument("--url", help="server URL (default $MINIPANDA_URL or http://127.0.0.1:25080)")
        parser.add_argument("--token-file", help="file holding a bearer token (default $MINIPANDA_TOKEN, else "
                                                 "<home>/admin.token; these reads need none)")
        parser.add_argument("--home", help="minipanda home (default $MINIPANDA_HOME or ~/.minipanda)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(func=func)


def row(queue):
    """One queue as the list's columns."""
    data = queue["queuedata"]
    return {"name": queue["name"], "status": queue["status"],
            "labels": ",".join(data.get("prodsourcelabels") or []) or "any", "cores": data.get("corecount"),
            "maxrss": data.get("maxrss"), "maxtime": data.get("maxtime"), "waiting": queue["waiting"],
            "running": queue["running"], "why": queue["why"]}


def cmd_queue_list(args):
    queues = _client(args).call("queues", method="GET")
    if args.json:
        print(json.dumps(queues, indent=1, default=str))
        return
    print_table(COLUMNS, [[row(q)[c] for c in COLUMNS] for q in queues])


def cmd_queue_show(args):
    found = [q for q in _client(args).call("queues", method="GET") if q["name"] == args.name]
    if not found:
        raise ValueError(f"queue {args.name!r} is not known to the server (minipanda queue list)")
    if args.json:
        print(json.dumps(found[0], indent=1, default=str))
        return
    for key, value in row(found[0]).items():
        print(f"{key:10} {value}")
    print("\nqueuedata:")
    for key, value in sorted(found[0]["queuedata"].items()):
        print(f"  {key:24} {json.dumps(value) if isinstance(value, (dict, list)) else value}")
