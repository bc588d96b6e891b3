import pytest

from clara_ray.config import ConfigError, load_config
from clara_ray.ingest.config import ApiConfig, IngestConfig


def test_yaml_loads_and_overrides_apply(tmp_path):
    cfg = load_config(IngestConfig, "configs/ingest.yaml", ["chunk.target_chars=500", "until=caption"])
    assert cfg.chunk.target_chars == 500
    assert cfg.runs("extract") and cfg.runs("caption") and not cfg.runs("synthesize")


def test_bad_fields_name_the_field():
    with pytest.raises(ConfigError, match="synthesis"):
        load_config(IngestConfig, None, ["synthesis.min_qa=5", "synthesis.max_qa=3"])
    with pytest.raises(ConfigError, match="until"):
        load_config(IngestConfig, None, ["until=everything"])


def test_api_settings_fall_back_to_environment_then_env_file(tmp_path, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY", "CLARA_TEXT_MODEL", "OPENAI_MODEL",
                 "MODEL", "CLARA_VISION_MODEL", "VISION_MODEL"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_BASE_URL=http://127.0.0.1:9/v1\nCLARA_TEXT_MODEL=from-file\nOPENAI_API_KEY=k\n")
    monkeypatch.setenv("CLARA_VISION_MODEL", "from-env")
    api = ApiConfig(env_file=str(env_file)).resolved()
    assert (api.base_url, api.text_model, api.vision_model, api.api_key) == (
        "http://127.0.0.1:9/v1", "from-file", "from-env", "k")
    assert ApiConfig(env_file=str(env_file), text_model="explicit").resolved().text_model == "explicit"
    assert ApiConfig(env_file=None).resolved().base_url is None
