"""Cluster launcher YAMLs, the Dockerfile and the job specs, checked offline.

The YAMLs go through Ray's own preparation and schema validation (what `ray up` runs before
it contacts a cloud); nothing here calls a cloud API or builds an image.
"""
import copy
import importlib.util
import shlex
from pathlib import Path

import pytest
import yaml

from clara_ray.jobs.spec import JobSpecError, cli_line, load_job_spec

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = {"aws": ROOT / "cluster/aws.yaml", "gcp": ROOT / "cluster/gcp.yaml"}
JOBS = sorted((ROOT / "cluster/jobs").glob("*.yaml"))
VARIABLES = {"CLARA_SHARED": "/mnt/cluster_storage/clara-ray", "CLARA_RUNS": "s3://bucket/clara-ray/runs"}


def _validated(path: Path) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(path.read_text()))  # merges the provider's defaults.yaml
    validate_config(config)                                    # ray-schema.json + cross-field checks
    return config


@pytest.mark.parametrize("cloud", sorted(CLUSTERS))
def test_cluster_yaml_passes_rays_validation(cloud):
    config = _validated(CLUSTERS[cloud])
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU")}
    cpu = {name: t for name, t in types.items() if name != config["head_node_type"] and not t["resources"].get("GPU")}
    assert gpu and cpu, "needs a GPU worker type (train/serve) and a CPU worker type (ingest)"
    for t in list(gpu.values()) + list(cpu.values()):
        assert 0 == t["min_workers"] < t["max_workers"] <= config["max_workers"]
    assert all(t["resources"]["GPU"] == 8 for t in gpu.values())
    assert 0 < config["idle_timeout_minutes"] <= 120  # GPU nodes bill while idle
    assert config["docker"]["image"].endswith("clara-ray:0.1.0-gpu")
    # the image carries everything: nodes install nothing at setup
    assert config["setup_commands"] == [] and config["worker_setup_commands"] == []
    if cloud == "aws":
        assert {t["node_config"]["InstanceType"] for t in gpu.values()} == {"p4d.24xlarge", "p5.48xlarge"}
    else:
        node = gpu["gpu_a100"]["node_config"]
        assert node["guestAccelerators"] == [{"acceleratorType": "nvidia-tesla-a100", "acceleratorCount": 8}]
        assert {"key": "install-nvidia-driver", "value": "True"} in node["metadata"]["items"]
        assert node["scheduling"][0]["onHostMaintenance"] == "TERMINATE"


@pytest.mark.parametrize("breakage, message", [
    (lambda c: c.update(idle_timeout_minute=5), "Additional properties"),
    (lambda c: c.update(head_node_type="nope"), "head_node_type"),
    (lambda c: c["available_node_types"]["gpu_a100"].pop("node_config"), "node_config"),
])
def test_validation_rejects_broken_configs(tmp_path, breakage, message):
    config = copy.deepcopy(yaml.safe_load(CLUSTERS["aws"].read_text()))
    breakage(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(Exception, match=message):
        _validated(path)


def test_job_specs_cover_every_stage_and_install_nothing():
    names = {p.stem for p in JOBS}
    assert names == {"stage_backbone", "ingest", "train_compress_pretrain", "train_instruct", "train_end_to_end",
                     "precompress", "evaluate"}
    for path in JOBS:
        spec = load_job_spec(path, VARIABLES)
        assert "${" not in spec["entrypoint"] and "${" not in str(spec["runtime_env"].get("env_vars"))
        assert spec["runtime_env"]["working_dir"] == "."
        assert not {"pip", "conda", "uv"} & set(spec["runtime_env"])
        assert "entrypoint_num_cpus" in spec and "entrypoint_num_gpus" in spec
        assert cli_line(spec, "http://h:8265").startswith("ray job submit --address http://h:8265 --working-dir . ")


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_job_entrypoints_parse_with_their_step_configs(path):
    from clara_ray.config import load_config

    argv = shlex.split(load_job_spec(path, VARIABLES)["entrypoint"])
    if path.stem == "stage_backbone":
        return  # not a pipeline step (test_backbone_is_staged_once_where_stage_1_reads_it)
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("pipelines.")
    if importlib.util.find_spec(argv[2]) is None:
        pytest.skip(f"{argv[2]} is not in the tree yet")
    options = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    overrides = [a for i, a in enumerate(argv[3:], 3) if "=" in a and not argv[i - 1].startswith("--")]
    if argv[2] == "pipelines.train":
        from clara_ray.train.config import TrainConfig

        cfg = load_config(TrainConfig, ROOT / options["--config"], overrides)
        assert cfg.stage == options["--stage"] and cfg.run.storage_path == VARIABLES["CLARA_RUNS"]
    elif argv[2] == "pipelines.evaluate":
        from clara_ray.evaluation.config import EvalConfig

        cfg = load_config(EvalConfig, ROOT / options["--config"], overrides)
        assert cfg.ray.num_gpus == 1 and cfg.checkpoint.startswith(VARIABLES["CLARA_SHARED"])
    elif argv[2] == "pipelines.ingest":
        from clara_ray.ingest.config import IngestConfig

        load_config(IngestConfig, ROOT / options["--config"], overrides)
    elif argv[2] == "pipelines.precompress":
        from clara_ray.store.job import PrecompressConfig

        cfg = load_config(PrecompressConfig, ROOT / options["--config"], overrides)
        assert cfg.device == "cuda" and cfg.num_gpus_per_actor == 1 and cfg.actors == 8
        assert options["--corpus"].endswith("raw_knowledge.jsonl")
        # the index is built in a task on a GPU node, not in the driver on the CPU head
        assert cfg.index_task.run_in == "task" and cfg.index.use_gpu
        assert cfg.index_task.remote_options() == {"num_gpus": 1, "num_cpus": 16, "max_retries": 0, "memory": 32 << 30}


def test_backbone_is_staged_once_where_stage_1_reads_it():
    from clara_ray.config import load_config
    from clara_ray.train.config import TrainConfig

    argv = shlex.split(load_job_spec(ROOT / "cluster/jobs/stage_backbone.yaml", VARIABLES)["entrypoint"])
    assert argv[:5] == ["python", "-m", "huggingface_hub.cli.hf", "download", "mistralai/Mistral-7B-Instruct-v0.2"]
    staged = argv[argv.index("--local-dir") + 1]
    assert staged == f"{VARIABLES['CLARA_SHARED']}/backbones/mistralai/Mistral-7B-Instruct-v0.2"
    train = shlex.split(load_job_spec(ROOT / "cluster/jobs/train_compress_pretrain.yaml", VARIABLES)["entrypoint"])
    cfg = load_config(TrainConfig, ROOT / "configs/train/compress_pretrain.yaml",
                      [a for a in train if a.startswith("model.")])
    assert cfg.model["backbone"] == staged
    # the same backbone as the GPU profile's (the spec's default only relocates it)
    assert staged.endswith(load_config(TrainConfig, ROOT / "configs/train/compress_pretrain.yaml").model["backbone"])


def test_hf_token_reaches_the_job_when_set_and_is_never_printed(monkeypatch):
    from clara_ray.jobs.spec import redacted

    spec_path = ROOT / "cluster/jobs/stage_backbone.yaml"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert "HF_TOKEN" not in load_job_spec(spec_path, VARIABLES)["runtime_env"]["env_vars"]
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    spec = load_job_spec(spec_path, VARIABLES)
    assert spec["runtime_env"]["env_vars"]["HF_TOKEN"] == "hf_secret"
    assert "hf_secret" in cli_line(spec, "http://h:8265")  # the line that submits passes it
    printed = cli_line(redacted(spec), "http://h:8265")
    assert "hf_secret" not in printed and '"HF_TOKEN": "<redacted>"' in printed


def test_variables_take_set_then_environment_then_spec_default(tmp_path, monkeypatch):
    spec = tmp_path / "job.yaml"
    spec.write_text("entrypoint: python -m pipelines.train --config ${CONFIGS}/a.yaml --out ${OUT}\n"
                    "variables: {CONFIGS: configs/train, OUT: default-out}\n")
    monkeypatch.delenv("CONFIGS", raising=False)
    monkeypatch.setenv("OUT", "env-out")
    assert load_job_spec(spec)["entrypoint"] == "python -m pipelines.train --config configs/train/a.yaml --out env-out"
    filled = load_job_spec(spec, {"CONFIGS": "configs/train/cpu", "OUT": "set-out"}, ["max_steps=2", "data.paths=[a b]"])
    assert shlex.split(filled["entrypoint"]) == [
        "python", "-m", "pipelines.train", "--config", "configs/train/cpu/a.yaml", "--out", "set-out",
        "max_steps=2", "data.paths=[a b]"]
    assert "variables" not in filled  # not a submit_job argument
    with pytest.raises(JobSpecError, match="override 'max_steps' is not key=value"):
        load_job_spec(spec, overrides=["max_steps"])


def test_job_spec_errors_name_the_file_and_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("CLARA_SHARED", raising=False)
    with pytest.raises(JobSpecError, match="ingest.yaml: entrypoint needs CLARA_SHARED"):
        load_job_spec(ROOT / "cluster/jobs/ingest.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("entrypoint: python -m pipelines.train\nruntime_env: {pip: [torch]}\n")
    with pytest.raises(JobSpecError, match="would install at job time"):
        load_job_spec(bad)
    bad.write_text("entrypoint: x\nentrypoint_gpus: 1\n")
    with pytest.raises(JobSpecError, match="unknown keys"):
        load_job_spec(bad)
    bad.write_bytes(b"entrypoint: \xff\n")
    with pytest.raises(JobSpecError, match=r"bad.yaml: line 1: not UTF-8 text"):
        load_job_spec(bad)
    bad.write_bytes(b"entrypoint: " + b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(JobSpecError, match=r"bad.yaml: invalid YAML: nested too deeply"):
        load_job_spec(bad)
