"""queueconfig.placeholders: only the listed names are replaced, by plain substitution; anything else is an error."""
import pytest

from queueconfig.placeholders import NAMES, check, expand, expand_all

VALUES = {"access_point": "/w/1", "queue": "Q", "queuedata": "/w/1/queuedata.json",
          "storagedata": "/w/1/ddmendpoints.json", "walltime": 600, "server": "http://127.0.0.1:25080",
          "token_file": "/w/1/token"}


def test_every_name_is_replaced():
    template = " ".join(f"{{{name}}}" for name in NAMES)
    assert expand(template, VALUES) == ("/w/1 Q /w/1/queuedata.json /w/1/ddmendpoints.json 600 "
                                        "http://127.0.0.1:25080 /w/1/token")
    assert check(template) == set(NAMES)


def test_doubled_braces_are_literal_and_values_are_not_expanded_again():
    assert expand("{{queue}} {queue}}} {{", VALUES) == "{queue} Q} {"
    assert expand("{queue}", {"queue": "{access_point} $(id)"}) == "{access_point} $(id)"
    assert check("no placeholders at all") == set()


@pytest.mark.parametrize("template, fragment", [
    ("{qeue}", "unknown placeholder {qeue}"),
    ("{0}", "unknown placeholder {0}"),
    ("{}", "unknown placeholder {}"),
    ("{queue.__class__}", "unknown placeholder {queue.__class__}"),
    ("{queue[0]}", "unknown placeholder {queue[0]}"),
    ("{queue!r}", "unknown placeholder {queue!r}"),
    ("{queue:>10}", "unknown placeholder {queue:>10}"),
    ("{ queue }", "unknown placeholder { queue }"),
    ("x{", "lone '{' at position 1"),
    ("}x", "lone '}' at position 0"),
    ("{{queue}", "lone '}'"),
    ("{a{queue}}", "lone '{' at position 0"),
])
def test_anything_else_is_an_error(template, fragment):
    with pytest.raises(ValueError, match="allowed") as info:
        check(template)
    assert fragment in str(info.value)
    with pytest.raises(ValueError):
        expand(template, VALUES)


def test_a_missing_value_is_an_error_not_a_silent_blank():
    with pytest.raises(ValueError, match=r"no value for placeholder \{server\}"):
        expand("--url={server}", {"queue": "Q"})


def test_expand_all_keeps_the_shape():
    assert expand_all(("pilot", "-q", "{queue}"), VALUES) == ("pilot", "-q", "Q")
    assert expand_all({"PILOT_HOME": "{access_point}"}, VALUES) == {"PILOT_HOME": "/w/1"}
