"""Static-ish reads pilots make: queuedata, storage endpoints, and transformation scripts.

``/trf/user/<name>`` serves files from ``<home>/trf/``, else the ones shipped in ``minipanda/trf/`` (its runGen).
pilot3 downloads its payload script only from PanDA's own trf URL; with ``http_proxy`` pointing at minipanda that
request arrives here, path intact. The name is checked
against a strict pattern and resolved inside the trf directory: a network-supplied name is never used as a path.
"""
import json
import os
import re

import bottle
from minipanda import errors
from minipanda.core import queues

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\Z")
SHIPPED_TRF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trf")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def _json(data):
    bottle.response.content_type = "application/json"
    return json.dumps(data)


def schedconfig_queue(params, identity, queue):
    if not QUEUE_NAME.match(queue):
        raise errors.RequestError(f"queue name {queue[:60]!r} is not valid", http=400)
    data = queues.queuedata(queue)
    if data is None and queues.config_in_force() is None:
        # No queue file: every queue exists with defaults, so a pilot can start before the first job names it.
        data = queues.default_queuedata(queue)
    if data is None:
        raise errors.RequestError(f"queue {queue!r} is not in the server's queue configuration", http=404)
    return _json(data)


def schedconfig_all(params, identity):
    return _json(queues.all_queuedata())


def ddm_endpoints(params, identity):
    # minipanda has no DDM endpoints: outputs go to paths the queue's copytool names. pilot3 reads {} as "none".
    return _json({})


def transformation(params, identity, name):
    if not SAFE_NAME.match(name):
        raise errors.RequestError(f"transformation name {name[:60]!r} is not a plain file name", http=400)
    # <home>/trf first (an operator's own scripts), then the ones shipped with minipanda (its runGen)
    for root in (os.path.join(bottle.request.app.config["minipanda.context"].home, "trf"), SHIPPED_TRF):
        root = os.path.realpath(root)
        path = os.path.realpath(os.path.join(root, name))
        if os.path.dirname(path) == root and os.path.isfile(path):
            return bottle.static_file(name, root=root, mimetype="text/x-shellscript")
    raise errors.RequestError(f"transformation {name!r} not found in the server's trf directory", http=404)


def register(app):
    app.route("/cache/schedconfig/<queue>.all.json", "GET", schedconfig_queue, family="v1", role=None)
    app.route("/cache/schedconfig.json", "GET", schedconfig_all, family="v1", role=None)
    app.route("/cache/ddmendpoints.json", "GET", ddm_endpoints, family="v1", role=None)
    # pilot3 fetches transformations through an HTTP proxy, naming PanDA's host: any Host header is served
    app.route("/trf/user/<name>", "GET", transformation, family="v1", role=None, any_host=True)
