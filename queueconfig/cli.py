"""The ``queueconfig`` command: lint, show and convert queue files.

Exit status: 0 when the file is valid, 1 when it has errors (all printed, one per line, on stderr), 2 for a wrong
command line.
"""
import argparse
import json
import sys

from queueconfig.errors import ConfigError
from queueconfig.service import quiet_on_closed_pipe

_EPILOG = """examples:
  queueconfig lint queues.yaml                 check a file; all errors at once
  queueconfig show queues.yaml                 one line per queue
  queueconfig show queues.yaml SITE_SLURM      every effective value of one queue
  queueconfig show queues.yaml SITE_SLURM --queuedata   what pilots get from /cache/schedconfig
  queueconfig convert panda_queueconfig.json > queues.yaml   a Harvester file in our format

The file is YAML or JSON in minipanda's format (see docs/queue-config.md), or a PanDA Harvester
panda_queueconfig.json, which is accepted as it is."""


def build_parser():
    """The argument parser of the ``queueconfig`` command."""
    parser = argparse.ArgumentParser(
        prog="queueconfig", description="Check, inspect and convert minipanda queue configuration files.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lint = commands.add_parser("lint", help="check a file and print every error and warning",
                               description="Check FILE. Prints 'ok, N queues, version X' and exits 0, or prints "
                                           "every error and exits 1. Warnings go to stderr either way.")
    lint.add_argument("file", metavar="FILE", help="queue file (YAML, JSON or Harvester panda_queueconfig.json)")
    lint.add_argument("-q", "--quiet", action="store_true", help="do not print warnings")
    show = commands.add_parser("show", help="print effective values (templates and defaults applied)",
                               description="Without QUEUE: a table of all queues. With QUEUE: every effective "
                                           "value of that queue.")
    show.add_argument("file", metavar="FILE", help="queue file")
    show.add_argument("queue", metavar="QUEUE", nargs="?", help="one queue to show in full")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.add_argument("--queuedata", action="store_true",
                      help="print the schedconfig dict that pilots read instead of our keys (implies --json)")
    convert = commands.add_parser("convert", help="print the file in minipanda's format on stdout",
                                  description="Print FILE in minipanda's format (templates kept) on stdout; "
                                              "ignored Harvester keys are listed on stderr.")
    convert.add_argument("file", metavar="FILE", help="queue file, typically a Harvester panda_queueconfig.json")
    convert.add_argument("--json", action="store_true", help="write JSON instead of YAML")
    commands.add_parser("schema", help="print the JSON Schema of one queue (for editors)",
                        description="Print the JSON Schema of one entry under 'queues'.")
    return parser


@quiet_on_closed_pipe
def main(argv=None):
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from queueconfig.loader import load  # the schema (pydantic): once a command needs it, not for --help

    if args.command == "schema":
        from queueconfig.jsonschema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    try:
        config = load(args.file)
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {exc.source}", file=sys.stderr)
        return 1
    if not getattr(args, "quiet", False):
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return {"lint": _lint, "show": _show, "convert": _convert}[args.command](config, args)


def _lint(config, args):
    print(f"ok, {len(config)} queues, version {config.version_id}")
    return 0


def _show(config, args):
    names = [args.queue] if args.queue else sorted(config.queues)
    if args.queue and args.queue not in config:
        print(f"no queue {args.queue!r} in {config.source}; queues: {', '.join(sorted(config.queues))}",
              file=sys.stderr)
        return 1
    if args.queuedata or args.json:
        from queueconfig.schedconfig import queuedata

        dump = queuedata if args.queuedata else (lambda q: q.model_dump(mode="json"))
        data = {name: dump(config[name]) for name in names}
        print(json.dumps(data[args.queue] if args.queue else data, indent=2))
    elif args.queue:
        print(f"{args.queue}  (version {config.version_id} of {config.source})")
        for key, value in _flatten(config[args.queue].model_dump(mode="json")):
            print(f"  {key:<40} {_cell(value)}")
    else:
        print(_table(config, names))
    return 0


def _convert(config, args):
    import yaml

    document = config.document()
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"# converted from {config.source} ({config.format} format) by queueconfig convert; "
              f"source version {config.version_id}")
        print(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), end="")
    return 0


def _flatten(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict) and value and key != "environment":
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value) if value else "-"
    return str(value)


def _table(config, names):
    header = ("QUEUE", "SITE", "STATUS", "MODE", "MAPTYPE", "WN", "BATCH", "TRANSPORT", "CORES", "MAXRSS",
              "MAXWORKERS")
    rows = [header]
    for name in names:
        q = config[name]
        transport = q.transport.type if q.transport.type == "local" else f"ssh:{q.transport.host}"
        rows.append((name, q.site, q.status, q.mode, q.mapType, q.wnconnectivity, q.batch.system, transport,
                     str(q.resources.corecount), str(q.resources.maxrss), str(q.limits.maxWorkers)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"{len(names)} queues, version {config.version_id}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
