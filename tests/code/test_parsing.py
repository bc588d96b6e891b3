"""Every way JSON / YAML text fails to parse is one ParseError saying why, with its line when known."""
import pytest

from clara_ray.parsing import ParseError, decode_text, parse_json, parse_yaml, read_text

DEEP = "[" * 100_000 + "]" * 100_000


def test_bytes_that_are_not_utf8_name_their_line_and_column(tmp_path):
    assert decode_text("Zürich\n".encode()) == "Zürich\n"
    with pytest.raises(ParseError, match=r"^line 2: not UTF-8 text \(byte 0xff at column 4\)$") as info:
        decode_text(b"ok\nabc\xffdef\n")
    assert info.value.line == 2
    (tmp_path / "bin").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ParseError, match="line 1: not UTF-8 text"):
        read_text(tmp_path / "bin")


@pytest.mark.parametrize("text, why, line", [
    ('{"a": 1,\n "b": }', r"invalid JSON: Expecting value \(column 7\)", 2),
    (DEEP, "invalid JSON: nested too deeply", None),
    ('{"n": ' + "9" * 5000 + "}", "invalid JSON: Exceeds the limit", None),  # Python's integer digit limit
    (b'{"a": "\xc3"}', r"not UTF-8 text \(byte 0xc3 at column 8\)", 1),
])
def test_json_failures_are_parse_errors(text, why, line):
    with pytest.raises(ParseError, match=why) as info:
        parse_json(text)
    assert info.value.line == line


def test_json_that_parses_is_returned_as_json_loads_would():
    assert parse_json('{"a": [1, "\u2028"]}') == {"a": [1, "\u2028"]}
    assert parse_json(b'{"a": 2}') == {"a": 2}


@pytest.mark.parametrize("text, why, line", [
    ("a: 1\nb: [1\n", r"invalid YAML: while parsing a flow sequence, expected ',' .*\(column 1\)$", 3),
    ("a: 1\n  b: 2\n", r"invalid YAML: mapping values are not allowed here \(column 4\)$", 2),
    ("a: \x07\n", "invalid YAML: unacceptable character #x0007", None),
    ("a: " + DEEP, "invalid YAML: nested too deeply", None),
])
def test_yaml_failures_are_parse_errors(text, why, line):
    with pytest.raises(ParseError, match=why) as info:
        parse_yaml(text)
    assert info.value.line == line
    assert parse_yaml("a: [1, 2]\n") == {"a": [1, 2]}
