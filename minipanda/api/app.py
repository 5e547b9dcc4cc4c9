"""The bottle application: one plugin for connection, auth and error replies; routes live in sibling modules.

A route declares ``family`` ("legacy" or "v1": how errors are written) and ``role`` (None = open read,
"any" = any valid token, or a set of roles). The plugin refuses what a browser was made to send (another site's
requests; with ``--auth none``, a Host header that names no address of this server), parses the body,
authenticates, calls the route with ``(params, identity)`` and turns RequestError/AuthError into a 4xx reply in the
route's family shape. A route may also declare ``navigable=True`` (a monitor page another site may link to) and
``any_host=True`` (a read pilot3 sends through an HTTP proxy, under PanDA's own host name).
"""
import dataclasses
import ipaddress
import json
import logging
import urllib.parse
from typing import Callable

import bottle
import pydantic

from minipanda import errors
from minipanda.api import params as route_params, wire
from minipanda.core import auth
from minipanda.core.db import database
from minipanda.errors import SC_PERMISSION, SC_ROLE, RequestError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServerContext:
    """What routes need from the running server."""

    home: str
    secret: bytes
    auth_mode: str = "token"  # or "none" (loopback only)
    # The names clients use to reach this server besides loopback addresses and "localhost" (the bound host,
    # --server-name): with auth "none" a Host header naming anything else is refused (DNS rebinding).
    server_names: tuple = ()
    max_body: int = 64 * 1024 * 1024
    # wake(duty name): run a duty soon (the server's DutyRunner.wake); a no-op when no duties run
    wake: Callable[[str], None] = lambda name: None


def is_loopback(host):
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiPlugin:
    """Connect, read params, authenticate, and write errors; see the module docstring."""

    name = "minipanda"
    api = 2

    def __init__(self, context):
        self.context = context

    def identify(self, request, role):
        header = request.headers.get("Authorization", "")
        if self.context.auth_mode == "none":
            return auth.ANONYMOUS_ADMIN
        if not header:
            if role is None:
                return None
            raise errors.AuthError("missing 'Authorization: Bearer <token>' header; create one with "
                                 "'minipanda token create --role ROLE --name NAME'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.AuthError("Authorization header must be 'Bearer <token>'")
        identity = auth.verify_token(self.context.secret, token.strip())
        if role not in (None, "any"):
            auth.require_role(identity, role)
        return identity

    def apply(self, callback, route):
        family = route.config.get("family", "v1")
        role = route.config.get("role")
        context = self.context

        params_model = route.config.get("params_model")

        def wrapper(*args, **kwargs):
            request, response = bottle.request, bottle.response
            database.connect(reuse_if_open=True)
            try:
                if context.auth_mode == "none" and not route.config.get("any_host"):
                    refuse_foreign_host(request, context.server_names)
                if not (route.config.get("navigable") and request.method in ("GET", "HEAD")):
                    refuse_cross_site(request)
                check_path_numbers(kwargs)
                # Who asks before what they send: a caller without a valid token gets its 401/403 before its body
                # is received (a body over the bridge's in-memory size is not, until the app reads it).
                identity = self.identify(request, role)
                params = wire.read_params(request, context.max_body) if route.config.get("params", True) else {}
                if params_model is not None:
                    params = checked(params_model, params)
                return callback(params, identity, *args, **kwargs)
            except errors.AuthError as exc:
                code = SC_ROLE if exc.http == 403 else SC_PERMISSION
                return error_reply(family, exc.http, str(exc), code, request, response)
            except RequestError as exc:
                return error_reply(family, exc.http, str(exc), exc.code, request, response)

        return wrapper


def checked(params_model, params):
    """The route's declared parameters parsed (minipanda.api.params), or a 400 naming every bad field."""
    try:
        return route_params.check(params_model, params)
    except pydantic.ValidationError as exc:
        raise RequestError("; ".join(route_params.problems(exc)[:20])) from None


def check_path_numbers(path_params):
    """A number in the URL path (``<id:int>``) beyond the database's integers names no object: 404, not 500."""
    for name, value in path_params.items():
        if isinstance(value, int) and not route_params.INT64_MIN <= value <= route_params.INT64_MAX:
            raise RequestError(f"{name}: nothing has the id {str(value)[:40]}", http=404)


def refuse_cross_site(request):
    """Refuse, whatever its method, a request that a web page on another site made a browser send.

    Browsers add ``Origin`` and ``Sec-Fetch-Site`` to such requests, and may send them without any token
    (``--auth none``) or with a form or text/plain body: a page must never submit or kill jobs through a local
    browser. The Origin must be this server's own, scheme included (``https://host`` is another origin than
    ``http://host``). Pilots, harvester and the CLI send neither header; panda-client sends its VO name as
    Origin, which no browser does. A monitor page (``navigable``) may be opened from a link on another site: it
    changes nothing, and its login cookie is SameSite=Strict.
    """
    origin = request.headers.get("Origin") or ""
    if not origin and "HTTP_SEC_FETCH_SITE" not in request.environ:
        return  # pilots, harvester and the CLI: no browser sent this
    parts = urllib.parse.urlsplit(origin)
    # panda-client sends its VO name as Origin (PanDA's token auth reads it); a browser sends a URL or "null".
    from_browser = origin == "null" or parts.scheme in ("http", "https")
    same_origin = parts.netloc.lower() == (request.headers.get("Host") or "").lower() and \
        parts.scheme == request.urlparts.scheme
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site") or (
            from_browser and not same_origin):
        raise RequestError(f"Origin: requests from {str(origin or 'another site')[:80]!r} may not use this "
                           "server; use the API from its own origin or a client without a browser",
                           SC_PERMISSION, 403)


def refuse_foreign_host(request, server_names):
    """Without tokens (``--auth none``), refuse a request whose Host names none of this server's addresses: a
    page of evil.example whose name now resolves to 127.0.0.1 (DNS rebinding) is same-origin to the browser, so
    only the Host header it sends (``evil.example:PORT``) tells it apart."""
    host = request.headers.get("Host")
    if host is None:  # HTTP/1.0 without Host: no browser sends that
        return
    try:
        name = urllib.parse.urlsplit("//" + host).hostname or ""
    except ValueError:
        name = ""
    if name == "localhost" or name in server_names or is_loopback(name):
        return
    raise RequestError(f"Host: {host[:80]!r} is not a name of this server (it answers to localhost, loopback "
                       "addresses and 'minipanda serve --server-name'); refused without tokens", SC_PERMISSION,
                       403)


def error_reply(family, http, message, code, request, response):
    response.status = http
    if family == "legacy":
        ctype, body = wire.legacy_body({"StatusCode": code, "ErrorDiag": message}, wire.wants_json(request))
    else:
        ctype, body = "application/json", wire.envelope(None, message, success=False)
    response.content_type = ctype
    log.info("refused %s %s: %s", request.method, wire.loggable(request.path), wire.loggable(message))
    return body


def make_app(context):
    """Build the WSGI application with every route registered."""
    from minipanda.api import cache, file_server, files, legacy, logs_bulk, monitor, openapi, v1

    app = bottle.Bottle(catchall=True)
    app.config["minipanda.context"] = context
    app.install(ApiPlugin(context))
    legacy.register(app)
    v1.register(app)
    cache.register(app)
    files.register(app)
    logs_bulk.register(app)
    file_server.register(app)
    openapi.register(app)
    monitor.register(app)

    def json_error(error):
        bottle.response.content_type = "application/json"
        if error.status_code >= 500:
            log.error("internal error on %s %s: %s\n%s", bottle.request.method, bottle.request.path,
                      error.exception, error.traceback)
            return json.dumps({"success": False, "message": "internal server error; the server log has details"})
        return json.dumps({"success": False, "message": f"{error.status_line}: {bottle.request.path}"})

    for status in (400, 404, 405, 413, 500):
        app.error_handler[status] = json_error
    return app
