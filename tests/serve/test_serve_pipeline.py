"""`clara serve` reads the same Serve config as `serve deploy`, with overrides."""
from __future__ import annotations

import pytest

from clara_ray.config import ConfigError
from pipelines.serve import DEFAULT_CONFIG, load_serve_config


def test_shipped_config_loads_with_overrides():
    settings, options, app, raw = load_serve_config(
        DEFAULT_CONFIG, ["checkpoint=/ck", "store=/st", "limits.max_top_k=7", "backend=vllm"])
    assert (settings.checkpoint, settings.store, settings.limits.max_top_k, settings.backend) == \
        ("/ck", "/st", 7, "vllm")
    assert settings.limits.max_question_chars == 2000  # untouched YAML value survives the merge
    assert app["import_path"] == "serve.app:build_app"
    assert raw["http_options"]["host"] == "127.0.0.1"
    assert set(options) == {"RagIngress", "Retriever", "Generator"}
    assert options["Generator"]["autoscaling_config"]["max_replicas"] >= 1


def test_shipped_config_is_a_valid_serve_deploy_schema():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(DEFAULT_CONFIG.read_text()))


@pytest.mark.parametrize("damage, message", [
    ("checkpoint", "clara_config.json: line 1"),
    ("store", "does not exist"),
])
def test_serve_deploy_builder_refuses_a_bad_checkpoint_or_store_before_any_replica(tmp_path, damage, message):
    from clara_ray.config import InputError
    from serve.app import build_app

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    config = '{"backbone": ' if damage == "checkpoint" else '{"backbone": "tiny-random"}'
    (checkpoint / "clara_config.json").write_text(config)
    args = yaml_args(checkpoint=str(checkpoint), store=str(tmp_path / "store"))
    with pytest.raises(InputError, match=message):
        build_app(args)


def yaml_args(**paths) -> dict:
    """The shipped config's application `args`, as `serve deploy` passes them, with `paths` set."""
    import yaml

    return {**yaml.safe_load(DEFAULT_CONFIG.read_text())["applications"][0]["args"], **paths}


def test_bad_override_names_the_field():
    with pytest.raises(ConfigError, match="limits.max_top_k"):
        load_serve_config(DEFAULT_CONFIG, ["limits.max_top_k=0"])
    with pytest.raises(ConfigError, match="not found"):
        load_serve_config(DEFAULT_CONFIG.with_name("missing.yaml"), [])
