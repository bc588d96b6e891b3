"""A real RAG application on 127.0.0.1: tiny CLaRa checkpoint + real CompressedStore + Ray Serve."""
from __future__ import annotations

import pytest

from clara_ray.jobs.local_cluster import free_port

TOKEN = "test-token"
DOCS = {
    "paris": "Paris is the capital of France and sits on the river Seine.",
    "tokyo": "Tokyo is the capital of Japan and the largest city of Asia.",
    "nile": "The Nile is a river in Africa that flows into the Mediterranean Sea.",
    "oxygen": "Oxygen is a chemical element with symbol O and atomic number 8.",
}


@pytest.fixture(scope="session")
def docs() -> dict[str, str]:
    return DOCS


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def checkpoint_and_store(tmp_path_factory, tiny_config):
    """A saved tiny checkpoint whose query reasoner equals its compressor (prepare_stage
    'end_to_end'), so a question equal to a document's text encodes exactly like that document.
    Its generator adapter is random, not zero: the bare tiny backbone answers only newlines, which
    strip to an empty answer; these weights write words, as a streamed answer needs."""
    import torch

    from clara_ray import CLaRa
    from clara_ray.store import DocRecord, StoreWriter, checkpoint_identity

    root = tmp_path_factory.mktemp("serve")
    model = CLaRa.from_config(tiny_config, device="cpu")
    model.prepare_stage("end_to_end")
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.adapter_parameters("generator"):
            param.normal_(0.0, 0.2)
    checkpoint, store = root / "checkpoint", root / "store"
    model.save_pretrained(checkpoint)
    vectors = model.compress_documents(list(DOCS.values())).numpy()
    with StoreWriter(store, checkpoint_identity(checkpoint, model)) as writer:
        writer.add(vectors, [DocRecord(id=i, text=t, source=f"{i}.md") for i, t in DOCS.items()])
        writer.publish()
    return str(checkpoint), str(store)


@pytest.fixture(scope="session")
def serve_settings(checkpoint_and_store):
    from serve.settings import ServeSettings

    checkpoint, store = checkpoint_and_store
    return ServeSettings(
        checkpoint=checkpoint, store=store, auth_token=TOKEN, default_top_k=2, default_max_new_tokens=4,
        limits={"max_body_bytes": 4096, "max_question_chars": 300, "max_top_k": 3, "max_new_tokens": 8},
    )


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
