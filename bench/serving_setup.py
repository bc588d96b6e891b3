"""Shared set-up of the serving benchmarks: a SmolLM2 CLaRa checkpoint, a store of 256-token
documents, and the RAG application on a local Ray Serve (127.0.0.1)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx

from clara_ray.jobs.local_cluster import free_port

# Issue #5: real SmolLM2 backbone, k=5 documents of 256 tokens at compression rate 32.
BACKBONE, DOC_TOKENS, RATE, TOP_K = "smollm2-135m", 256, 32, 5
SQUAD_ENV = "CLARA_SQUAD_JSON"


def corpus(squad: str | None, tokenizer, num_docs: int) -> tuple[list[str], list[str]]:
    """(documents of exactly DOC_TOKENS tokens, questions). SQuAD paragraphs, consecutive ones
    joined until long enough; a deterministic synthetic text when no SQuAD file is given."""
    path = squad or os.environ.get(SQUAD_ENV)
    if path and Path(path).exists():
        articles = json.loads(Path(path).read_text())["data"]
        paragraphs = [p["context"] for a in articles for p in a["paragraphs"]]
        questions = [q["question"] for a in articles for p in a["paragraphs"] for q in p["qas"]]
    else:
        paragraphs = [f"Record {i}: the station at site {i % 17} logged {i * 7 % 101} units of rainfall "
                      f"and a temperature of {i % 40} degrees during season {i % 4}." for i in range(4000)]
        questions = [f"How much rainfall did site {i % 17} log in season {i % 4}?" for i in range(200)]
    docs, buffer = [], []
    for text in paragraphs:
        buffer.append(text)
        ids = tokenizer(" ".join(buffer), add_special_tokens=False)["input_ids"]
        if len(ids) >= DOC_TOKENS:
            docs.append(tokenizer.decode(ids[:DOC_TOKENS]))
            buffer = []
            if len(docs) == num_docs:
                break
    return docs, questions


def build_assets(workdir: Path, squad: str | None, num_docs: int) -> tuple[str, str, list[str]]:
    """(checkpoint, store, questions); the query reasoner starts as a copy of the compressor."""
    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.store import DocRecord, StoreWriter, checkpoint_identity

    model = CLaRa.from_config(CLaRaConfig(backbone=BACKBONE, compression_rate=RATE, doc_max_length=DOC_TOKENS),
                              device="cpu")
    model.prepare_stage("end_to_end")
    checkpoint, store = workdir / "checkpoint", workdir / "store"
    model.save_pretrained(checkpoint)
    docs, questions = corpus(squad, model.tokenizer, num_docs)
    vectors = model.compress_documents(docs).numpy()
    with StoreWriter(store, checkpoint_identity(checkpoint, model)) as writer:
        writer.add(vectors, [DocRecord(id=f"doc{i}", text=t, source="bench") for i, t in enumerate(docs)])
        writer.publish()
    return str(checkpoint), str(store), questions



def start_serve() -> str:
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


# Two model replicas share 2 cores: one core's worth of threads each.
DEPLOYMENTS = {"Retriever": {"ray_actor_options": {"num_cpus": 0.5}},
               "Generator": {"ray_actor_options": {"num_cpus": 1}}}


def deploy(url: str, name: str, torch_threads: int, **settings) -> None:
    """Run the application under `name` at /, replacing any previous one, and wait until ready."""
    from ray import serve

    from serve.app import bind_app
    from serve.settings import ServeSettings

    for app in list(serve.status().applications):
        serve.delete(app)
    serve.run(bind_app(ServeSettings.model_validate(dict(settings, torch_threads=torch_threads)), DEPLOYMENTS), name=name, route_prefix="/")
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{name} did not become healthy")


def stop_serve() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
