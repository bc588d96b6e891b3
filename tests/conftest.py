"""Shared fixtures: environment for offline CPU runs, one Ray cluster per session, tiny model."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every test that needs one (ray.init costs ~10 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_config():
    from clara_ray import CLaRaConfig

    return CLaRaConfig(backbone="tiny-random", compression_rate=8, doc_max_length=32, dtype="float32")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """A fresh tiny CLaRa; tests that train must copy or build their own."""
    from clara_ray import CLaRa

    return CLaRa.from_config(tiny_config, device="cpu")
