"""The monitor's routes: read-only pages under ``/monitor/`` and Prometheus ``/metrics``.

Every page answers ``?json`` (or ``Accept: application/json``) with the data it shows. Pages need a token of any
role: ``Authorization: Bearer`` like the API, or, for a browser, the ``minipanda_monitor`` cookie set by the login
form (HttpOnly, SameSite=Strict, path ``/monitor``; it is read by these pages only, never by a route that changes
anything). A server started with ``--auth none`` (loopback only) opens them without one. Pages never change
anything; they carry a Content-Security-Policy without scripts. ``/metrics`` takes a bearer token (any role)
unless the server runs ``--auth none``.
"""
import json
import os
import urllib.parse

import bottle

from minipanda.api import params as route_params, wire
from minipanda.core import auth, policy
from minipanda.errors import AuthError, RequestError
from minipanda.monitor import filters, logs, metrics, pagedata, queries

BASE = "/monitor"
COOKIE = "minipanda_monitor"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
STYLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "monitor", "templates", "style.css")

# ``json`` (any value, or none) asks for the page's data as JSON; undeclared, it passes through as sent.
_FILTER_NAMES = ("status", "user", "taskname", "queue", "jobstatus", "produsername", "username", "computingsite")
FILTERS = route_params.model("MonitorFilters", days=route_params.integer(1, 3650),
                             limit=route_params.integer(1, filters.MAX_LIMIT), jeditaskid=route_params.Int,
                             task=route_params.Int, taskid=route_params.Int,
                             **{name: route_params.Name for name in _FILTER_NAMES})
LOGIN = route_params.model("MonitorLogin", token=route_params.text(8192), next=route_params.Name)


def _context():
    return bottle.request.app.config["minipanda.context"]


def root():
    return bottle.request.script_name.rstrip("/") + BASE


def _secure_headers(response):
    response.set_header("Content-Security-Policy", CSP)
    response.set_header("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on the login form, which the
    # cross-site check rightly refuses; other sites still learn nothing of these URLs.
    response.set_header("Referrer-Policy", "same-origin")
    response.set_header("Cache-Control", "no-store")


def wants_json(params):
    return "json" in params or wire.wants_json(bottle.request)


def cookie_identity():
    """(identity from the login cookie or None, why the cookie was refused or '')."""
    token = bottle.request.get_cookie(COOKIE)
    if not token:
        return None, ""
    try:
        return auth.verify_token(_context().secret, token), ""
    except AuthError as exc:
        return None, f"the saved token was refused: {exc}"


def _reply(params, template, data, status=200):
    response = bottle.response
    response.status = status
    _secure_headers(response)
    if wants_json(params):
        response.content_type = "application/json"
        return json.dumps(data, default=str)
    response.content_type = "text/html; charset=utf-8"
    from minipanda.monitor import pages  # jinja2: loaded by the first page shown, not by every server start

    return pages.render(template, data, root())


def _error(params, status, message, login=False):
    data = {"success": False, "status": status, "message": message}
    if login:
        here = bottle.request.path + ("?" + bottle.request.query_string if bottle.request.query_string else "")
        data.update(login=True, next=here)
    return _reply(params, "error.html", data, status)


def page(handler, template):
    """A page route: who is asking (header, cookie, or --auth none), then the handler's data, as HTML or JSON."""

    def route(params, identity, **kwargs):
        refused = ""
        if identity is None:
            identity, refused = cookie_identity()
        if identity is None:
            return _error(params, 401, refused or "these pages need a token: send 'Authorization: Bearer <token>' "
                                                  "or log in below", login=True)
        try:
            data = handler(params, identity, **kwargs)
        except RequestError as exc:
            return _error(params, exc.http, str(exc))
        except AuthError as exc:
            return _error(params, exc.http, str(exc))
        return _reply(params, template, queries.plain(data))

    route.__name__ = handler.__name__
    return route


# ---- pages --------------------------------------------------------------------------------------------------------

def dashboard(params, identity):
    return pagedata.dashboard(filters.parse_filters(params))


def job_list(params, identity):
    return pagedata.jobs_page(filters.parse_filters(params))


def task_list(params, identity):
    return pagedata.tasks_page(filters.parse_filters(params, default_limit=100))


def queue_list(params, identity):
    return pagedata.queues_page()


def worker_list(params, identity):
    return pagedata.workers_page(params)


def job(params, identity, panda_id):
    home = _context().home
    base = f"{root()}/jobs/{panda_id}"
    return pagedata.job_page(panda_id, lambda j, log_file: logs.describe(
        home, j, log_file, base, may_read=lambda scope: policy.may_read_scope(identity, scope)))


def task(params, identity, task_id):
    return pagedata.task_page(task_id, filters.parse_filters(params))


def queue(params, identity, name):
    return pagedata.queue_page(name)


def worker(params, identity, harvester_id, worker_id):
    return pagedata.worker_page(harvester_id, worker_id)


# ---- logs, style, login -----------------------------------------------------------------------------------------

def _log_tarball(identity, panda_id):
    """(file name, stored path) of the log tarball of a job, when the caller may read its scope."""
    from minipanda.core import models

    log_file = (models.JobFile.select().where(models.JobFile.job == panda_id, models.JobFile.type == "log").first())
    found = logs.locate(_context().home, log_file)
    if found is None:
        raise RequestError(f"job {panda_id} has no log tarball in the server's file store", http=404)
    scope, lfn, path = found
    if not policy.may_read_scope(identity, scope):
        raise AuthError(f"scope: {scope} is another user's; a user reads their own and shared scopes", 403)
    return lfn, path


def _raw(handler):
    """A log route: like a page for who may ask, but the answer is the file (errors as text)."""

    def route(params, identity, **kwargs):
        if identity is None:
            identity, _ = cookie_identity()
        response = bottle.response
        _secure_headers(response)
        try:
            if identity is None:
                raise AuthError("a token is needed: send 'Authorization: Bearer <token>' or log in at "
                                f"{root()}/login")
            return handler(identity, **kwargs)
        except (RequestError, AuthError) as exc:
            response.status = exc.http
            response.content_type = "text/plain; charset=utf-8"
            return str(exc) + "\n"

    return route


def log_member(identity, panda_id, name):
    _, path = _log_tarball(identity, panda_id)
    data, _cut = logs.read_member(path, name, logs.MAX_MEMBER_BYTES)
    bottle.response.content_type = "text/plain; charset=utf-8"
    bottle.response.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
    return data


def log_tarball(identity, panda_id):
    lfn, path = _log_tarball(identity, panda_id)
    reply = bottle.static_file(os.path.basename(path), root=os.path.dirname(path), mimetype="application/gzip",
                               download=lfn)
    for name, value in (("Content-Security-Policy", "sandbox; default-src 'none'"), ("X-Content-Type-Options",
                                                                                     "nosniff")):
        reply.set_header(name, value)
    return reply


def style(params, identity):
    bottle.response.content_type = "text/css; charset=utf-8"
    bottle.response.set_header("Cache-Control", "max-age=300")
    with open(STYLE, encoding="utf-8") as handle:
        return handle.read()


def _safe_next(value):
    """Where to go after logging in: a path of these pages only (never another site)."""
    value = str(value or "")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(root() + "/") or value.startswith("//"):
        return root() + "/"
    return value


def login(params, identity):
    if bottle.request.method == "GET":
        return _error(params, 401, "log in with a minipanda token", login=True)
    token = str(params.get("token") or "").strip()
    try:
        found = auth.verify_token(_context().secret, token)
    except AuthError as exc:
        return _error(params, 401, f"token refused: {exc}", login=True)
    bottle.response.set_cookie(COOKIE, token, path=root(), httponly=True, samesite="strict",
                               secure=bottle.request.urlparts.scheme == "https")
    bottle.redirect(_safe_next(params.get("next")), 303)
    return found  # not reached: redirect raises


def logout(params, identity):
    bottle.response.delete_cookie(COOKIE, path=root())
    bottle.redirect(root() + "/login", 303)


def redirect_root(params, identity):
    bottle.redirect(root() + "/", 301)


def register(app):
    registry = metrics.make_registry(app.config["minipanda.context"].home)
    app.config["minipanda.metrics"] = registry

    def metrics_route(params, identity):
        body, content_type = metrics.exposition(registry, bottle.request.headers.get("Accept"))
        bottle.response.content_type = content_type
        return body

    pages_ = [("/", dashboard, "dashboard.html"), ("/jobs", job_list, "jobs.html"),
              ("/jobs/<panda_id:int>", job, "job.html"), ("/tasks", task_list, "tasks.html"),
              ("/tasks/<task_id:int>", task, "task.html"), ("/queues", queue_list, "queues.html"),
              ("/queues/<name:path>", queue, "queue.html"), ("/workers", worker_list, "workers.html"),
              ("/workers/<harvester_id>/<worker_id:int>", worker, "worker.html")]
    for path, handler, template in pages_:
        app.route(BASE + path, "GET", page(handler, template), family="v1", role=None, params_model=FILTERS,
                  navigable=True)
    app.route(BASE, "GET", redirect_root, family="v1", role=None, params=False, navigable=True)
    app.route(BASE + "/jobs/<panda_id:int>/log/<name:path>", "GET", _raw(log_member), family="v1", role=None,
              params=False, navigable=True)
    app.route(BASE + "/jobs/<panda_id:int>/logtarball", "GET", _raw(log_tarball), family="v1", role=None,
              params=False, navigable=True)
    app.route(BASE + "/style.css", "GET", style, family="v1", role=None, params=False)
    app.route(BASE + "/login", ["GET", "POST"], login, family="v1", role=None, params_model=LOGIN, navigable=True)
    app.route(BASE + "/logout", "POST", logout, family="v1", role=None, params=False)
    app.route("/metrics", "GET", metrics_route, family="v1", role="any", params=False)
