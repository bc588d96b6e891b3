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


RAY_CPUS = 2


def _start_local_ray():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture(scope="session")
def start_local_ray():
    """Starts the session's one-node cluster (again, after a test attached to another cluster)."""
    return _start_local_ray


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every test that needs one (ray.init costs ~10 s)."""
    ray = _start_local_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _ray_cpus_free(request):
    """A Ray test starts with every CPU free: a Ray Data or Ray Train job would otherwise wait
    forever for CPUs that an earlier test's actors still hold. (The serve app's own tests
    hold its replicas' CPUs on purpose.)"""
    if "ray_cluster" not in request.fixturenames or "rag_url" in request.fixturenames:
        yield
        return
    import gc
    import time

    ray = request.getfixturevalue("ray_cluster")
    # Ray Data and Ray Train release their actors' CPUs asynchronously; on a loaded CI machine
    # that has taken over 30 s after a test whose workers were killed on purpose.
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) < RAY_CPUS:
        if time.monotonic() > deadline:
            pytest.fail(f"an earlier test left Ray CPUs reserved ({ray.available_resources()}); "
                        f"alive actors: {_alive_actor_classes(ray)}")
        gc.collect()  # a restarted Ray Data worker lives while a cycle in this process holds its handle
        time.sleep(0.5)
    yield


def _alive_actor_classes(ray) -> list[str]:
    """The state API, without the dashboard (the session cluster runs none): read from the GCS."""
    actors = ray._private.state.actors().values()
    return sorted(a["ActorClassName"] for a in actors if a["State"] == "ALIVE")


@pytest.fixture(scope="session")
def tiny_config():
    from clara_ray import CLaRaConfig

    return CLaRaConfig(backbone="tiny-random", compression_rate=8, doc_max_length=32, dtype="float32")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """A fresh tiny CLaRa; tests that train must copy or build their own."""
    from clara_ray import CLaRa

    return CLaRa.from_config(tiny_config, device="cpu")
