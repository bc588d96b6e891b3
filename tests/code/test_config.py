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
