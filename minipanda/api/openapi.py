"""``/api/v1/openapi.json``: the OpenAPI description of every route, made from the routes' declared parameters
(:mod:`minipanda.api.params`), for clients and for schema-driven test tools."""
import json
import re

import bottle

from minipanda import __version__


# A bottle wildcard, ``<name>`` or ``<name:filter>``; OpenAPI's path template is ``{name}``.
WILDCARD = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?>")


def _operation(route, schema):
    operation = {"summary": (route.callback.__doc__ or route.rule).strip().splitlines()[0],
                 "responses": {"200": {"description": "a v1 envelope {success, message, data}, or a legacy "
                                                      "StatusCode reply"},
                               "4XX": {"description": "refused: the message names the field"}}}
    if route.config.get("role") is not None:
        operation["security"] = [{"bearer": []}]
    wildcards = WILDCARD.findall(route.rule)
    if wildcards:
        operation["parameters"] = [{"name": name, "in": "path", "required": True,
                                    "schema": {"type": "integer" if kind == "int" else "string"}}
                                   for name, kind in wildcards]
    if schema is not None:
        operation["requestBody"] = {"content": {
            "application/json": {"schema": schema}, "application/x-www-form-urlencoded": {"schema": schema}}}
    return operation


def describe(app):
    """The OpenAPI 3.1 document of ``app``'s routes."""
    paths = {}
    for route in app.routes:
        model = route.config.get("params_model")
        schema = model.model_json_schema() if model is not None else None
        path = WILDCARD.sub(lambda match: "{" + match.group(1) + "}", route.rule)
        methods = route.method if isinstance(route.method, list) else [route.method]
        for method in methods:
            paths.setdefault(path, {})[method.lower()] = _operation(route, schema)
    return {"openapi": "3.1.0", "info": {"title": "minipanda", "version": __version__},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}, "paths": paths}


def register(app):
    document = {}

    def openapi(params, identity):
        if not document:  # the routes are all registered by the first request
            document.update(describe(app))
        bottle.response.content_type = "application/json"
        return json.dumps(document)

    app.route("/api/v1/openapi.json", "GET", openapi, family="v1", role=None, params=False)
