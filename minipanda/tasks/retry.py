"""The retry module: whether a failed task job gets another attempt, and with what.

A failed job gets a new attempt (a new PandaID with attemptNr + 1 for the same input, made by the generator)
unless its attemptNr reached maxAttempt or a rule says otherwise. Rules live in the retry_rule table: the first
active rule whose error source (pilot, exe, sup or any), code (or any) and diag regex (or any) match one of the
job's errors decides:

- ``no_retry``: the input fails now;
- ``limit_retry(n)``: at most n attempts, fewer than maxAttempt;
- ``increase_memory(f)``: the next attempt asks for f x the memory;
- ``increase_walltime(f)``: the next attempt asks for f x the walltime.

Default rules are written once, when a server first starts on a database (an admin may remove them).
"""
import dataclasses
import logging
import math
import re

from minipanda.core import models, states
from minipanda.errors import RequestError

log = logging.getLogger(__name__)
ACTIONS = {"no_retry": False, "limit_retry": True, "increase_memory": True, "increase_walltime": True}
SOURCES = ("pilot", "exe", "sup", "any")
# (source, code, diag regex, action, parameter, description)
DEFAULT_RULES = (
    ("sup", 100, "", "limit_retry", 5, "lost heartbeat: the node or pilot died; retry, at most 5 attempts"),
    ("pilot", 1212, "", "increase_memory", 1.5, "memory limit exceeded: retry with 1.5 x memory"),
    ("pilot", 1235, "", "increase_memory", 1.5, "payload exceeded maximum allowed memory: retry with 1.5 x memory"),
    ("pilot", 1213, "", "increase_walltime", 1.5, "reached maximum time: retry with 1.5 x walltime"),
    ("pilot", 1331, "", "no_retry", None, "missing input file: another attempt cannot find it either"),
    ("any", None, r"(?i)missing input|input file .* (is missing|not found)", "no_retry", None,
     "missing input file (by message)"),
)
SEEDED_KEY = "retry_rules.seeded"


@dataclasses.dataclass
class Verdict:
    """What happens to a failed job's input: ``retry`` with ``ram``/``walltime`` (None = unchanged)."""

    retry: bool
    reason: str
    ram: int = None
    walltime: int = None


def ensure_defaults(now=None):
    """Write the default rules the first time only (a removed default stays removed)."""
    if models.Config.get_or_none(models.Config.key == SEEDED_KEY):
        return
    now = now or states.utcnow()
    for source, code, pattern, action, parameter, description in DEFAULT_RULES:
        models.RetryRule.create(error_source=source, error_code=code, diag_pattern=pattern, action=action,
                                parameter=parameter, description=description, created=now)
    models.Config.insert(key=SEEDED_KEY, value="1").on_conflict_ignore().execute()


def add_rule(source, code, pattern, action, parameter, description=""):
    """Validate and store a rule; raises RequestError naming the bad field."""
    errors = []
    if source not in SOURCES:
        errors.append(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")
    if action not in ACTIONS:
        errors.append(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    elif ACTIONS[action] and parameter is None:
        errors.append(f"parameter: {action} needs a number (attempts for limit_retry, a factor otherwise)")
    elif action == "limit_retry" and (parameter < 1 or parameter != int(parameter)):
        errors.append(f"parameter: limit_retry needs a whole number of attempts >= 1, got {parameter}")
    elif action.startswith("increase_") and parameter <= 1:
        errors.append(f"parameter: {action} needs a factor above 1, got {parameter}")
    try:
        re.compile(pattern or "")
    except re.error as exc:
        errors.append(f"diag: {pattern!r} is not a valid regular expression ({exc})")
    if code is None and not pattern and source == "any" and action == "no_retry":
        errors.append("code, diag: a rule matching every error with no_retry would disable all retries; "
                      "name a code or a diag pattern")
    if errors:
        raise RequestError("; ".join(errors))
    rule = models.RetryRule.create(error_source=source, error_code=code, diag_pattern=pattern or "", action=action,
                                   parameter=parameter if ACTIONS[action] else None,
                                   description=description or "", created=states.utcnow())
    return rule_dict(rule)


def remove_rule(rule_id):
    """Delete a rule; False when there is no such rule."""
    return models.RetryRule.delete().where(models.RetryRule.id == rule_id).execute() == 1


def rule_dict(rule):
    """A rule as the API shows it."""
    return {"id": rule.id, "source": rule.error_source, "code": rule.error_code, "diag": rule.diag_pattern,
            "action": rule.action, "parameter": rule.parameter, "active": rule.active,
            "description": rule.description}


def list_rules():
    """Every rule, active or not, in the order they are tried."""
    return [rule_dict(r) for r in models.RetryRule.select().order_by(models.RetryRule.id)]


def job_errors(job):
    """[(source, code, diag)] of the errors a job reported or was given."""
    found = [("pilot", job.pilot_error_code, job.pilot_error_diag), ("exe", job.exe_error_code, job.exe_error_diag),
             ("sup", job.sup_error_code, job.sup_error_diag)]
    return [(source, code, diag or "") for source, code, diag in found if code or diag]


def matching_rule(job, rules):
    """The first rule matching one of the job's errors, or None."""
    errors = job_errors(job)
    for rule in rules:
        for source, code, diag in errors:
            if rule.error_source not in (source, "any"):
                continue
            if rule.error_code is not None and rule.error_code != code:
                continue
            if rule.diag_pattern and not re.search(rule.diag_pattern, diag):
                continue
            return rule
    return None


def decide(job, rules):
    """The retry verdict for a failed job."""
    rule = matching_rule(job, rules)
    limit = job.max_attempt
    label = f"rule #{rule.id} ({rule.action}" + (f" {rule.parameter:g})" if rule.parameter else ")") if rule else ""
    if rule is not None and rule.action == "no_retry":
        return Verdict(False, f"no retry: {label}: {rule.description}".rstrip(": "))
    if rule is not None and rule.action == "limit_retry":
        limit = min(limit, int(rule.parameter))
    if job.attempt_nr >= limit:
        why = f"attempt {job.attempt_nr} of at most {limit}" + (f" ({label})" if rule else "")
        return Verdict(False, f"no retry: {why}")
    verdict = Verdict(True, f"retry as attempt {job.attempt_nr + 1} of at most {limit}")
    if rule is not None and rule.action == "increase_memory":
        base = job.min_ram_count or math.ceil((job.max_pss or job.max_rss or 0) / 1024) or 1000
        verdict.ram = math.ceil(base * rule.parameter)
        verdict.reason += f"; memory {base} -> {verdict.ram} MB by {label}"
    elif rule is not None and rule.action == "increase_walltime":
        ran = (job.end_time - job.start_time).total_seconds() if job.start_time and job.end_time else 0
        base = job.max_walltime or math.ceil(ran) or 3600
        verdict.walltime = math.ceil(base * rule.parameter)
        verdict.reason += f"; walltime {base} -> {verdict.walltime} s by {label}"
    elif rule is not None:
        verdict.reason += f" ({label})"
    return verdict


def active_rules():
    """The active rules in the order they are tried (by id)."""
    return list(models.RetryRule.select().where(models.RetryRule.active == True)  # noqa: E712
                .order_by(models.RetryRule.id))
