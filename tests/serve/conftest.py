"""A real RAG application on 127.0.0.1: tiny CLaRa checkpoint + real CompressedStore + Ray Serve."""
from __future__ import annotations

import pytest
from serve_helpers import DOCS, TOKEN, build_checkpoint_and_store, tiny_serve_settings

from clara_ray.jobs.local_cluster import free_port


@pytest.fixture(scope="session")
def docs() -> dict[str, str]:
    return DOCS


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def checkpoint_and_store(tmp_path_factory, tiny_config):
    return build_checkpoint_and_store(tmp_path_factory.mktemp("serve"), tiny_config)


@pytest.fixture(scope="session")
def serve_settings(checkpoint_and_store):
    return tiny_serve_settings(*checkpoint_and_store)


# Module scope: the replicas hold CPUs of the shared 2-CPU test cluster, which the Ray Data and
# Ray Train tests that run later need back.
@pytest.fixture(scope="module")
def rag_url(ray_cluster, serve_settings):
    """Base URL of the application running on Ray Serve, bound to loopback."""
    from ray import serve

    from serve.app import bind_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(bind_app(serve_settings), name="clara", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
