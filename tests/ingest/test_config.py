import pytest

from clara_ray.config import ConfigError, load_config
from clara_ray.ingest.config import ApiConfig, IngestConfig


def test_yaml_loads_and_overrides_apply(tmp_path):
    cfg = load_config(IngestConfig, "configs/ingest.yaml", ["chunk.max_tokens=64", "until=caption"])
    assert cfg.chunk.max_tokens == 64
    assert cfg.runs("extract") and cfg.runs("caption") and not cfg.runs("synthesize")


@pytest.mark.parametrize("chunking, stage1", [
    (("configs/ingest.yaml", []), "configs/train/cpu/compress_pretrain.yaml"),  # the demo and CPU runs
    (("configs/ingest.yaml", "cluster/jobs/ingest.yaml"), "configs/train/compress_pretrain.yaml"),  # GPU cluster
])
def test_chunks_are_cut_to_the_window_of_the_model_trained_on_them(chunking, stage1):
    import shlex

    from clara_ray.jobs import load_job_spec
    from clara_ray.train.config import TrainConfig

    config, spec = chunking
    overrides = [a for a in shlex.split(load_job_spec(spec, {"CLARA_SHARED": "/s"})["entrypoint"])
                 if a.startswith("chunk.")] if spec else []
    chunk = load_config(IngestConfig, config, overrides).chunk
    model = load_config(TrainConfig, stage1).model
    assert (chunk.tokenizer, chunk.max_tokens) == (model["backbone"], model["doc_max_length"])


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
