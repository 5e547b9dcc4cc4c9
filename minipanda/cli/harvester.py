"""The operator's worker and harvester commands: ``minipanda worker list``, ``minipanda harvester list|kill-workers|
set-n-workers``, all through the HTTP API with an admin token (like the job commands).

Commands to harvester are queued on the server; a harvester picks them up on its next command poll, so
``kill-workers`` and ``set-n-workers`` print the queued command id, not the outcome.
"""
import json

from minipanda.cli import options
from minipanda.cli.tables import print_table

WORKER_COLUMNS = ["workerID", "harvester", "queue", "status", "batchID", "nCore", "submitTime", "endTime",
                  "pandaid_list", "diag"]


_client = options.client


def _common(parser, func):
    return options.add_client_options(parser, func, "an admin token")


def n_workers(value):
    """--n: a whole number of workers, or 'none' to lift the cap."""
    if value.lower() == "none":
        return None
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def add_parsers(sub):
    """Add the worker and harvester commands to the ``minipanda`` parser's subcommands."""
    worker = sub.add_parser("worker", help="workers (pilots' batch jobs) as harvesters report them") \
        .add_subparsers(title="worker")
    wlist = _common(worker.add_parser("list", help="list workers, most recently changed first"), cmd_worker_list)
    wlist.add_argument("--queue", help="only workers of this queue")
    wlist.add_argument("--status", help="only workers in this status (submitted, running, finished, failed, ...)")
    wlist.add_argument("--harvester", help="only workers of this harvester id")
    wlist.add_argument("--limit", type=int, default=50, help="at most this many workers (default 50)")

    harvester = sub.add_parser("harvester", help="harvester instances and commands to them") \
        .add_subparsers(title="harvester")
    _common(harvester.add_parser("list", help="harvester instances with their last heartbeat"), cmd_harvester_list)
    kill = _common(harvester.add_parser("kill-workers", help="ask harvester to kill the workers of a queue "
                                                             "(or only the listed ones)"), cmd_kill_workers)
    kill.add_argument("--queue", required=True, help="the queue whose workers to kill")
    kill.add_argument("--worker", type=int, action="append", default=[], metavar="ID",
                      help="kill only this workerID (repeatable)")
    kill.add_argument("--harvester", help="send the command to this harvester id only (default: whichever "
                                          "harvester asks first)")
    cap = _common(harvester.add_parser("set-n-workers", help="cap the number of workers of a queue"),
                  cmd_set_n_workers)
    cap.add_argument("--queue", required=True, help="the queue to cap")
    cap.add_argument("--n", required=True, type=n_workers, metavar="N|none",
                     help="the most workers harvester keeps for the queue; 'none' lifts the cap")
    cap.add_argument("--harvester", help="send the command to this harvester id only (default: whichever "
                                         "harvester asks first)")


def cmd_worker_list(args):
    rows = _client(args).list_workers(queue=args.queue, status=args.status, harvester_id=args.harvester,
                                      limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print_table(WORKER_COLUMNS, [[",".join(map(str, r[c])) if c == "pandaid_list" else
                                  (r[c] or "")[:60] if c == "diag" else r.get(c) for c in WORKER_COLUMNS]
                                 for r in rows])


def cmd_harvester_list(args):
    rows = _client(args).list_harvesters()
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    cols = ["harvester_id", "host", "version", "start_time", "last_heartbeat"]
    print_table(cols, [[r.get(c) for c in cols] for r in rows])


def _queued(args, command, params):
    command_id = _client(args).harvester_command(command, params, args.harvester)
    if args.json:
        print(json.dumps({"command_id": command_id, "command": command, "params": params}))
    else:
        target = f"harvester {args.harvester}" if args.harvester else "the first harvester that asks"
        print(f"command {command_id} {command} {json.dumps(params)} queued for {target}")


def cmd_kill_workers(args):
    params = {"queue": args.queue}
    if args.worker:
        params["worker_ids"] = args.worker
    _queued(args, "KILL_WORKERS", params)


def cmd_set_n_workers(args):
    _queued(args, "SET_N_WORKERS", {"queue": args.queue, "n_workers": args.n})
