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


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, "/nonexistent.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["noequals"])


def test_override_value_yaml_refuses_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'name=\[1': the value is not valid YAML"):
        parse_overrides(["name=[1"])
    # characters YAML's reader refuses (a lone surrogate from undecodable argv bytes, a control character)
    for value, shown in (("CR \udcff", "\\\\udcff"), ("CR \x07", "\\\\x07")):
        with pytest.raises(ConfigError, match=rf"override 'name=CR {shown}': the value is not valid YAML "
                                              r"\(unacceptable character"):
            parse_overrides([f"name={value}"])
