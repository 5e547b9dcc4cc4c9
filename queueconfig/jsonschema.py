"""The JSON Schema of one queue (what ``queueconfig schema`` prints), each key described by the docstring under its
attribute in :mod:`queueconfig.schema`.

The models do not read those docstrings themselves (pydantic's ``use_attribute_docstrings``): that parses the
schema module's source each time it is imported, ~10 ms of CPU of every server, harvester and testbed start, for
text that only this schema shows. Here they are read the same way (the string right after an annotated attribute,
cleaned with inspect.cleandoc) when the schema is asked for.
"""
import ast
import inspect

from queueconfig import schema


def attribute_docstrings(module=schema):
    """{class name: {attribute: its docstring}} of the classes defined in ``module``."""
    docs = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if not isinstance(node, ast.ClassDef):
            continue
        found = docs.setdefault(node.name, {})
        for attribute, after in zip(node.body, node.body[1:]):
            if (isinstance(attribute, ast.AnnAssign) and isinstance(attribute.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                found[attribute.target.id] = inspect.cleandoc(after.value.value)
    return docs


def json_schema():
    """The JSON Schema of one entry under ``queues``, every documented key with its description."""
    result = schema.Queue.model_json_schema()
    docs = attribute_docstrings()
    for name, definition in [("Queue", result), *result.get("$defs", {}).items()]:
        for key, prop in definition.get("properties", {}).items():
            text = docs.get(name, {}).get(key)
            if text and "description" not in prop:
                prop["description"] = text
    return result
