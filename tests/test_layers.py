"""The import direction inside minipanda/: api, cli, server -> monitor -> tasks, workers -> core -> errors. Read from
the code's own imports (inside functions too), so a lazy import cannot hide a wrong-way dependency."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "minipanda"
# Which minipanda sub-packages each one may import (itself always).
MAY_IMPORT = {
    "errors": set(),
    "core": {"errors"},
    "tasks": {"errors", "core"},
    "workers": {"errors", "core"},
    "monitor": {"errors", "core", "tasks", "workers"},
    "api": {"errors", "core", "tasks", "workers", "monitor"},
    "server": {"errors", "core", "tasks", "api"},
    "cli": {"errors", "core", "tasks", "server"},
}


def layer(module):
    """'minipanda.core.jobs' -> 'core'; the package itself and __main__ are outside the layers."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "minipanda" else None


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_every_subpackage_has_a_rule():
    found = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem not in
                                                                   ("__init__", "__main__"))}
    assert found == set(MAY_IMPORT)


def test_imports_point_one_way():
    breaches = []
    for path in ROOT.rglob("*.py"):
        own = layer("minipanda." + ".".join(path.relative_to(ROOT).with_suffix("").parts))
        if own not in MAY_IMPORT:  # the package __init__ and __main__ stand above the layers
            continue
        for target in imported_modules(path):
            other = layer(target)
            if other in MAY_IMPORT and other != own and other not in MAY_IMPORT[own]:
                breaches.append(f"{path.relative_to(ROOT.parent)}: {own} imports {target}")
    assert breaches == []


def test_no_harvester_agent_imports_another():
    """An agent imports only the agents' base; what two agents (or an agent and the command line) share lives below
    them (harvester/steps.py, states.py, ...), and nothing below the agents imports one."""
    agents = ROOT.parent / "harvester" / "agents"
    breaches = []
    for path in sorted((ROOT.parent / "harvester").rglob("*.py")):
        if path.parent == agents and path.stem in ("__init__", "base"):
            continue
        for target in imported_modules(path):
            if target.startswith("harvester.agents.") and target.split(".")[2] != "base" and \
                    path.name != "runner.py":  # the runner drives the agents: it is above them
                breaches.append(f"{path.relative_to(ROOT.parent)} imports {target}")
    assert breaches == []


def test_each_batch_system_is_one_short_class():
    """One short class per batch system (dask-jobqueue's shape): its commands as class attributes, its header lines,
    native states and status parser; what several share is in the bases (batch/base.py, batch/jobscript.py) or in a
    helper module beside the class (condor_jobs.py, ...). Read from the source: importing the HTCondor bindings is
    slow."""
    sizes = {}
    for path in sorted((ROOT.parent / "harvester" / "batch").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            bases = {getattr(base, "id", None) for base in getattr(node, "bases", ())}
            if isinstance(node, ast.ClassDef) and bases & {"BatchSystem", "ScriptBatch"} and node.name != "ScriptBatch":
                sizes[node.name] = node.end_lineno - node.lineno + 1
    assert len(sizes) >= 5 and {name: lines for name, lines in sizes.items() if lines > 100} == {}, sizes
