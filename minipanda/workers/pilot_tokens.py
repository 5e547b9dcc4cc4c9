"""Pilot tokens a harvester mints for its workers: each bound to one harvester, worker and queue (revocable), and
revoked only by the harvester that minted it."""
import datetime
import logging

from minipanda.core import auth, models, states
from minipanda.core.db import database
from minipanda.errors import RequestError
from minipanda.workers.fields import id_list, integer, iso, text
from minipanda.workers.harvesters import bind_jobs

log = logging.getLogger(__name__)
MAX_PILOT_TOKEN_LIFETIME = 7 * 24 * 3600


def _pilot_token_prefix(harvester_id):
    return f"pilot.{harvester_id}."


def minted_by(token_name, harvester_id):
    """True when ``token_name`` is ``pilot.<harvester_id>.<workerID>`` exactly (so harvester "h1" cannot match
    the tokens of harvester "h1.x": what follows the prefix must be the worker id alone)."""
    prefix = _pilot_token_prefix(harvester_id)
    return token_name.startswith(prefix) and token_name[len(prefix):].isdigit()


def mint_pilot_token(secret, harvester_id, worker_id, queue, lifetime, now=None, panda_ids=None):
    """A pilot-role token for one worker, recorded (revocable) and bound to that harvester, worker and queue
    (minipanda.core.policy); the jobs ``panda_ids`` this harvester acquired for the worker are bound to it now.
    Returns {"token", "jti", "expires"}."""
    worker_id = integer(worker_id, "worker_id")
    queue = text(queue, "queue", 128, required=True)
    lifetime = integer(lifetime, "lifetime", minimum=60, maximum=MAX_PILOT_TOKEN_LIFETIME)
    panda_ids = [] if panda_ids in (None, "") else id_list(panda_ids, "panda_ids")
    now = now or states.utcnow()
    binding = {"harvester_id": harvester_id, "worker_id": worker_id, "queue": queue}
    with database.atomic():
        bind_jobs(harvester_id, worker_id, panda_ids)
        token, jti = auth.create_token(secret, f"{_pilot_token_prefix(harvester_id)}{worker_id}", "pilot",
                                       days=lifetime / 86400, now=now, binding=binding)
    return {"token": token, "jti": jti, "expires": iso(now + datetime.timedelta(seconds=lifetime))}


def revoke_pilot_tokens(harvester_id, jtis, now=None):
    """Revoke pilot tokens this harvester minted; returns how many were newly revoked.

    A token of anyone else refuses the whole call (403), nothing revoked. An unknown jti is skipped: it can do no
    harm, and refusing it would leave a harvester whose server lost its tokens retrying the same call forever."""
    jtis = id_list(jtis, "jtis", parse=lambda v, n: text(v, n, 64, required=True))
    Token = models.Token
    with database.atomic():
        tokens = {t.jti: t for t in Token.select().where(Token.jti.in_(jtis))} if jtis else {}
        for index, jti in enumerate(jtis):
            token = tokens.get(jti)
            if token is not None and (token.role != "pilot" or not minted_by(token.name, harvester_id)):
                raise RequestError(f"jtis[{index}]: {jti} is not a pilot token minted by harvester {harvester_id}",
                                   http=403)
        unknown = sorted(set(jtis) - set(tokens))
        if unknown:
            log.info("harvester %s asked to revoke unknown tokens %s", harvester_id, unknown[:10])
        if not tokens:
            return 0
        return Token.update(revoked=now or states.utcnow()).where(Token.jti.in_(list(tokens)),
                                                                   Token.revoked.is_null()).execute()
