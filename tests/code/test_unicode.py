"""encoding_problem finds the text UTF-8 cannot encode; printable makes any text safe to show."""
import json

from clara_ray.unicode import encoding_problem, printable


def test_lone_surrogates_are_found_and_everything_else_passes():
    assert encoding_problem(json.loads('"ok \\ud83d\\ude00"')) is None  # a surrogate pair is one character
    assert encoding_problem("a\x00\ufffe\U0010ffff") is None
    assert encoding_problem(json.loads('"ab\\udc00"')) == (
        "contains a lone surrogate U+DC00 at character 2, which is not Unicode text")
    assert printable("a\ud800b").encode("utf-8") == b"a\\ud800b" and printable("🙂") == "🙂"
