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


def test_bad_override_names_the_field():
    with pytest.raises(ConfigError, match="limits.max_top_k"):
        load_serve_config(DEFAULT_CONFIG, ["limits.max_top_k=0"])
    with pytest.raises(ConfigError, match="not found"):
        load_serve_config(DEFAULT_CONFIG.with_name("missing.yaml"), [])
