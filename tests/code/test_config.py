import pytest
from pydantic import BaseModel

from clara_ray.config import ConfigError, load_config, parse_overrides


class Inner(BaseModel):
    lr: float = 1e-4
    steps: int = 10


class Outer(BaseModel):
    name: str = "run"
    optim: Inner = Inner()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: base\noptim:\n  lr: 0.1\n  steps: 5\n")
    config = load_config(Outer, path, ["optim.steps=7", "name=other"])
    assert config == Outer(name="other", optim=Inner(lr=0.1, steps=7))


def test_bad_field_names_file_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*optim.steps"):
        load_config(Outer, path)


def test_a_config_that_is_not_yaml_text_names_the_file(tmp_path):
    cases = {"png.yaml": (b"\x89PNG\r\n\x1a\n", r"png.yaml: line 1: not UTF-8 text \(byte 0x89 at column 1\)"),
             "deep.yaml": (b"a: " + b"[" * 100_000 + b"]" * 100_000, r"deep.yaml: invalid YAML: nested too deeply"),
             "tab.yaml": (b"a: 1\nb:\t\x07\n", r"tab.yaml: invalid YAML: unacceptable character #x0007")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            load_config(Outer, tmp_path / name)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, "/nonexistent.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["noequals"])


def test_override_value_yaml_refuses_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'name=\[1': invalid YAML: while parsing a flow sequence, expected ','"):
        parse_overrides(["name=[1"])
    # characters YAML's reader refuses (a lone surrogate from undecodable argv bytes, a control character)
    for value, shown in (("CR \udcff", "\\\\udcff"), ("CR \x07", "\\\\x07")):
        with pytest.raises(ConfigError, match=rf"override 'name=CR {shown}': invalid YAML: unacceptable character"):
            parse_overrides([f"name={value}"])
    with pytest.raises(ConfigError, match=r"^override 'name=\[{95}\.\.\.': invalid YAML: nested too deeply$"):
        parse_overrides(["name=" + "[" * 100_000])  # quoted in part
