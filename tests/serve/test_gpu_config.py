"""serve/config.gpu.yaml: what `serve deploy` validates, the project's settings, and its GPU budget."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.gpu_platform import load_platform
from pipelines.serve import load_serve_config

ROOT = Path(__file__).resolve().parents[2]
GPU_CONFIG = ROOT / "serve" / "config.gpu.yaml"
BACKBONE_BF16_BYTES = 7.24e9 * 2  # Mistral-7B (configs/train/compress_pretrain.yaml) in bfloat16


def _gpus_per_node() -> set[int]:
    nodes = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())["available_node_types"].values()
    return {n["resources"]["GPU"] for n in nodes if n["resources"].get("GPU")}


def test_serve_deploy_schema_and_the_settings_accept_the_gpu_config():
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(GPU_CONFIG.read_text())
    ServeDeploySchema.model_validate(raw)  # what `serve deploy <file>` checks before it contacts the cluster
    settings, options, _, _ = load_serve_config(GPU_CONFIG, [])  # ServeSettings, as build_app validates the args
    assert (settings.backend, settings.reader, settings.device, settings.dtype) == ("vllm", "compressed", "cuda",
                                                                                    "bfloat16")
    assert settings.vllm.engine_args() == {"dtype": "bfloat16", "max_model_len": 4096, "enforce_eager": False,
                                           "gpu_memory_utilization": 0.9}
    # the HF model of a vLLM Generator stays off the GPU; the query reasoner runs on it
    assert settings.model_device("generator") == "cpu" and settings.model_device("query_reasoner") == "cuda"
    assert set(options) == {"RagIngress", "Retriever", "Generator"}
    gpu_replicas = {name: (o["ray_actor_options"].get("num_gpus", 0), o["autoscaling_config"]["max_replicas"])
                    for name, o in options.items()}
    assert gpu_replicas["Retriever"][0] == gpu_replicas["Generator"][0] == 1
    # every replica at its maximum still fits one 8-GPU node
    assert sum(gpus * replicas for gpus, replicas in gpu_replicas.values()) <= min(_gpus_per_node())
    memory = {name: o["ray_actor_options"].get("memory", 0) for name, o in options.items()}
    assert memory["Retriever"] > BACKBONE_BF16_BYTES  # the checkpoint passes through the CPU on load
    assert memory["Generator"] > 2 * BACKBONE_BF16_BYTES  # loaded on the CPU + the export of the merged weights


def test_gpu_image_default_vllm_python_is_the_image_venv(monkeypatch):
    """Unset in the config: the image's environment names the venv cluster/Dockerfile builds."""
    from serve.settings import VLLM_PYTHON_ENV

    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    image_python = f"{load_platform()['VLLM_VENV']}/bin/python"
    assert f"{VLLM_PYTHON_ENV}={image_python}" in dockerfile
    monkeypatch.setenv(VLLM_PYTHON_ENV, image_python)
    settings, _, _, _ = load_serve_config(GPU_CONFIG, [])
    assert "python" not in yaml.safe_load(GPU_CONFIG.read_text())["applications"][0]["args"]["vllm"]
    assert settings.vllm.python == image_python


@pytest.mark.slow
def test_gpu_engine_arguments_are_vllm_engine_args():
    """vllm.LLM passes its keyword arguments on to EngineArgs: the GPU config's names must be fields there
    (read from the CPU build of the same vLLM release, in .venv-vllm)."""
    import subprocess

    python = ROOT / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"vLLM venv not installed at {python} (make vllm-env)")
    settings, _, _, _ = load_serve_config(GPU_CONFIG, [])
    names = subprocess.run(
        [str(python), "-c", "import dataclasses; from vllm.engine.arg_utils import EngineArgs; "
                            "print(' '.join(f.name for f in dataclasses.fields(EngineArgs)))"],
        capture_output=True, text=True, check=True, cwd="/").stdout.split()
    assert {"enable_prompt_embeds", "seed", *settings.vllm.engine_args()} <= set(names)
