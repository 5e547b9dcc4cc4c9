"""The user's task commands: ``minipanda task|dataset|why|retry-rule ...``, all through the HTTP API.

Tables for people, ``--json`` for scripts. Exit status 0 on success, 1 when the server refused (the reason is
printed), 2 for a usage error.
"""
import json
import os
import re
import shutil
import time
import urllib.parse

from minipanda.cli import options
from minipanda.errors import ClientError
from minipanda.cli.tables import print_table

FLAT_INT_OPTIONS = ("nFilesPerJob", "nEventsPerJob", "nJobs", "coreCount", "ramCount", "walltime", "maxAttempt",
                    "taskPriority", "nScouts")
FLAT_INT_HELP = {
    "nFilesPerJob": "input files per job", "nEventsPerJob": "events per job (inputs with events)",
    "nJobs": "number of jobs (without input: %%RNDM and the serial number differ per job)",
    "coreCount": "cores per job (default 1)", "ramCount": "memory per job in MB",
    "walltime": "walltime per job in seconds", "maxAttempt": "attempts per input before it fails (default 3)",
    "taskPriority": "the task's priority (admin/production)", "nScouts": "scout jobs before the rest (default 3)",
}
TASK_COLUMNS = ["jediTaskID", "status", "pctFinished", "nFiles", "nFilesFinished", "nFilesFailed", "userName",
                "modificationTime", "taskName"]


_client = options.client


def _common(parser, func):
    return options.add_client_options(parser, func)


def add_parsers(sub):
    """Add the task, dataset, why and retry-rule commands to the ``minipanda`` parser's subcommands."""
    task = sub.add_parser("task", help="submit, list, show and command tasks").add_subparsers(title="task")
    submit = _common(task.add_parser("submit", help="submit a task from a JSON file, or prun-like options"),
                     cmd_task_submit)
    submit.add_argument("file", nargs="?", help="task parameters (flat form or PanDA's taskParamMap) as JSON")
    submit.add_argument("--taskName", help="task name (default: task.<user>.<time>)")
    submit.add_argument("--exec", dest="exec_", metavar="CMD", help="command template: %%IN, %%OUT, %%RNDM:base")
    submit.add_argument("--inDS", help="input dataset (minipanda dataset add)")
    submit.add_argument("--nGBPerJob", type=float, help="split the input into jobs of about this many GB")
    for name in FLAT_INT_OPTIONS:
        submit.add_argument(f"--{name}", type=int, help=FLAT_INT_HELP[name])
    submit.add_argument("--outputs", help="comma-separated output file names")
    submit.add_argument("--site", help="queue(s) to run on, comma-separated")
    submit.add_argument("--excludedSite", help="queues not to use, comma-separated")
    submit.add_argument("--prodSourceLabel", help="job label: user (default), managed (production role), test")
    submit.add_argument("--vo", help="virtual organisation, stored with the task")
    submit.add_argument("--workingGroup", help="working group, stored with the task and its jobs")
    tlist = _common(task.add_parser("list", help="list tasks, newest first"), cmd_task_list)
    tlist.add_argument("--status", help="only tasks in this state (running, done, failed, ...)")
    tlist.add_argument("--user", help="another user's tasks (admin)")
    tlist.add_argument("--days", type=float, default=14, help="modified in the last N days (default 14)")
    tlist.add_argument("--name", help="task name pattern, * as wildcard")
    tlist.add_argument("--limit", type=int, default=100, help="at most this many tasks (default 100)")
    show = _common(task.add_parser("show", help="one task: state, progress, jobs, history"), cmd_task_show)
    show.add_argument("task_id", type=int, help="the jediTaskID 'task submit' printed")
    for action, text in (("kill", "kill: queued jobs cancelled, running ones stopped"),
                         ("finish", "finish: no new jobs (--soft lets running ones end; else they are killed)"),
                         ("retry", "retry the failed inputs of a finished task"),
                         ("pause", "pause: no new jobs until resume"), ("resume", "resume a paused task")):
        command = _common(task.add_parser(action, help=text), cmd_task_command)
        command.add_argument("task_id", type=int, help="the jediTaskID")
        command.set_defaults(action=action)
        if action == "finish":
            command.add_argument("--soft", action="store_true", help="let running jobs end instead of killing them")
    _dataset_parsers(sub)
    why = _common(sub.add_parser("why", help="why is this job (not) running, in plain words"), cmd_why)
    why.add_argument("panda_id", type=int, help="the job's PandaID ('job list', 'task show')")
    _rule_parsers(sub)


def _dataset_parsers(sub):
    dataset = sub.add_parser("dataset", help="register and inspect input data").add_subparsers(title="dataset")
    add = _common(dataset.add_parser("add", help="register files (or a directory's files) in a dataset"),
                  cmd_dataset_add)
    add.add_argument("name", help="the dataset's name; files are added to it if it exists")
    add.add_argument("paths", nargs="+", help="files, or directories whose files are added")
    add.add_argument("--events-per-file", type=int, help="events in each file (for nEventsPerJob splitting)")
    dlist = _common(dataset.add_parser("list", help="list datasets"), cmd_dataset_list)
    dlist.add_argument("--user", help="only datasets of this user")
    dlist.add_argument("--name", help="name pattern, * as wildcard")
    dshow = _common(dataset.add_parser("show", help="a dataset's files"), cmd_dataset_show)
    dshow.add_argument("name", help="the dataset's name (a task's name, as prun's --outDS with '/', shows the "
                                    "files of all its output and log datasets)")
    dget = _common(dataset.add_parser("get", help="download a dataset's files (or a task's outputs and logs)"),
                   cmd_dataset_get)
    dget.add_argument("name", help="the dataset's name, or a task's name (prun's --outDS with '/')")
    dget.add_argument("--dir", default=".", help="directory to write the files to (default: the current one)")
    dget.add_argument("--no-logs", action="store_true", help="skip log tarballs (the task's .log dataset)")


def _rule_parsers(sub):
    rules = sub.add_parser("retry-rule", help="rules of the retry module").add_subparsers(title="retry-rule")
    _common(rules.add_parser("list", help="list the retry rules"), cmd_rule_list)
    add = _common(rules.add_parser("add", help="add a rule (admin)"), cmd_rule_add)
    add.add_argument("--source", default="any", choices=["pilot", "exe", "sup", "any"], help="error source")
    add.add_argument("--code", type=int, help="error code (default: any)")
    add.add_argument("--diag", default="", help="regular expression on the error message")
    add.add_argument("--action", required=True,
                     choices=["no_retry", "limit_retry", "increase_memory", "increase_walltime"],
                     help="what a matching failure gets")
    add.add_argument("--parameter", type=float, help="attempts for limit_retry, factor for increase_*")
    add.add_argument("--description", default="", help="why the rule exists, in words")
    remove = _common(rules.add_parser("remove", help="remove a rule (admin)"), cmd_rule_remove)
    remove.add_argument("rule_id", type=int, help="the rule's id, as 'retry-rule list' shows it")


def flat_params(args):
    """The flat task parameters from prun-like options (only those given)."""
    params = {"exec": args.exec_}
    for name in ("taskName", "inDS", "site", "excludedSite", "prodSourceLabel", "vo", "workingGroup", "nGBPerJob") \
            + FLAT_INT_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.outputs:
        params["outputs"] = [o.strip() for o in args.outputs.split(",") if o.strip()]
    params.setdefault("taskName", f"task.{int(time.time() * 1000)}")
    return params


def cmd_task_submit(args):
    if args.file and args.exec_:
        raise ValueError("give a parameter file or --exec, not both")
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as handle:
                params = json.load(handle)
        except ValueError as exc:
            raise ValueError(f"{args.file}: not valid JSON ({exc})") from None
    elif args.exec_:
        params = flat_params(args)
    else:
        raise ValueError("give a parameter file or --exec CMD")
    task_id = _client(args).submit_task(params)
    print(json.dumps({"jediTaskID": task_id}) if args.json else f"submitted: jediTaskID={task_id}")


def cmd_task_list(args):
    filters = {k: v for k, v in (("status", args.status), ("userName", args.user), ("taskName", args.name)) if v}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - args.days * 86400))
    rows = _client(args).find_tasks(since, filters, args.limit)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print_table(TASK_COLUMNS, [[str(row.get(c))[:19] if c == "modificationTime" else row.get(c)
                                for c in TASK_COLUMNS] for row in rows])


def cmd_task_show(args):
    client = _client(args)
    details = client.task_details(args.task_id)
    history = client.task_log(args.task_id)
    if args.json:
        print(json.dumps({"task": details, "history": history}, indent=1))
        return
    for key in ("jediTaskID", "taskName", "userName", "status", "errorDialog", "inDS", "outDS", "site",
                "coreCount", "ramCount", "walltime", "maxAttempt", "taskPriority", "nScouts", "nJobsPlanned",
                "nFiles", "nFilesFinished", "nFilesFailed", "pctFinished", "creationDate", "modificationTime"):
        if details.get(key) not in (None, ""):
            print(f"{key:18} {details[key]}")
    print(f"{'jobs':18} {details.get('statistics') or '(none yet)'}")
    print("\nhistory:")
    print_table(["time", "from", "to", "reason"], [[h["time"], h["from"], h["to"], h["reason"]] for h in history])


def cmd_task_command(args):
    code, message = _client(args).task_command(args.action, args.task_id, soft=getattr(args, "soft", False))
    if args.json:
        print(json.dumps({"code": code, "message": message}))
    else:
        print(message if code == 0 else f"refused (code {code}): {message}")
    return 0 if code == 0 else 1


def cmd_dataset_add(args):
    from minipanda.tasks import datasets

    files = datasets.scan_paths(args.paths, args.events_per_file)
    result = _client(args).add_dataset_files(args.name, files)
    print(json.dumps(result) if args.json else
          f"{result['dataset']}: {result['added']} files added, {result['skipped']} already there, "
          f"{result['n_files']} in total")


def cmd_dataset_list(args):
    rows = _client(args).list_datasets(args.user, args.name)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    cols = ["name", "type", "userName", "jediTaskID", "nFiles", "bytes", "creationTime"]
    print_table(cols, [[str(r.get(c))[:19] if c == "creationTime" else r.get(c) for c in cols] for r in rows])


def cmd_dataset_show(args):
    data = _client(args).show_dataset(args.name)
    if args.json:
        print(json.dumps(data, indent=1))
        return
    print(f"{data['name']} ({data['type']}, {data['userName']}, {len(data['files'])} files)")
    cols = ["lfn", "fsize", "checksum", "nEvents", "status", "location"]
    if data["type"] == "container":  # a task's outputs and logs: say which dataset each file is in
        cols = ["dataset", "lfn", "fsize", "checksum", "status", "location"]
    print_table(cols, [[f.get(c) for c in cols] for f in data["files"]])


def cmd_dataset_get(args):
    client = _client(args)
    data = client.show_dataset(args.name)
    os.makedirs(args.dir, exist_ok=True)
    got, problems = [], []
    for entry in data["files"]:
        if args.no_logs and entry.get("dataset", data["name"]).rstrip("/").endswith(".log"):
            continue
        try:
            got.append(_download(client, entry, args.dir))
        except (OSError, ClientError) as exc:
            problems.append(f"{entry['lfn']}: {exc}")
    if args.json:
        print(json.dumps({"downloaded": got, "failed": problems}, indent=1))
    else:
        for path in got:
            print(path)
        for problem in problems:
            print(f"not downloaded: {problem}")
    return 1 if problems else 0


def _download(client, entry, directory):
    """Fetch one file of a dataset into ``directory``, checked against its adler32; returns its path.

    A file in the server's file store (a location ending in /files/<scope>) is read from the server this command
    talks to, with its token; a location on a shared file system is copied."""
    lfn, location = entry["lfn"], entry.get("location") or ""
    if os.path.basename(lfn) != lfn or lfn in (".", ".."):
        raise ClientError(f"not a plain file name: {lfn!r}")
    target = os.path.join(directory, lfn)
    match = re.search(r"/files/([^/]+)$", location)
    tmp = target + ".part"
    if match:
        url = f"{client.url}/files/{match.group(1)}/{urllib.parse.quote(lfn)}"
        with client.session.get(url, stream=True, timeout=client.timeout) as reply:
            if reply.status_code != 200:
                raise ClientError(f"GET {url}: HTTP {reply.status_code}: {reply.text[:200]}")
            with open(tmp, "wb") as out:
                for block in reply.iter_content(1 << 20):
                    out.write(block)
    elif location.startswith("/") and os.path.isfile(os.path.join(location, lfn)):
        shutil.copyfile(os.path.join(location, lfn), tmp)
    else:
        raise ClientError(f"no copy to download (status {entry.get('status')}, location {location!r})")
    from minipanda.tasks import datasets

    checksum = datasets.adler32_of(tmp)
    registered = (entry.get("checksum") or "").removeprefix("ad:")
    if registered and registered != checksum:
        os.unlink(tmp)
        raise ClientError(f"adler32 {checksum} of the download is not the registered {entry['checksum']}")
    os.replace(tmp, target)
    return target


def cmd_why(args):
    data = _client(args).why(args.panda_id)
    print(json.dumps(data, indent=1) if args.json else "\n".join(data["lines"]))


def cmd_rule_list(args):
    rules = _client(args).retry_rules()
    if args.json:
        print(json.dumps(rules, indent=1))
        return
    cols = ["id", "source", "code", "diag", "action", "parameter", "active", "description"]
    print_table(cols, [[r.get(c) if r.get(c) is not None else "any" if c == "code" else "" for c in cols]
                       for r in rules])


def cmd_rule_add(args):
    rule = _client(args).add_retry_rule(source=args.source, code=args.code, diag=args.diag, action=args.action,
                                        parameter=args.parameter, description=args.description)
    print(json.dumps(rule) if args.json else f"added retry rule {rule['id']}")


def cmd_rule_remove(args):
    _client(args).remove_retry_rule(args.rule_id)
    print(f"removed retry rule {args.rule_id}")
