"""A live store and an observable endpoint (issue 25): metrics on Ray's Prometheus endpoint, one log
line per request, new versions swapped in under load, bad versions refused while the old one serves.

One Serve deployment for the whole module (it costs ~30 s to start), on a copy of the session's
store; the tests run in file order, the metrics test first, while its counters start from nothing.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from clara_ray.jobs.local_cluster import free_port

pytestmark = pytest.mark.slow

WATCH_S = 2.0
# The replicas take little of the 2-CPU test cluster: `clara add` runs Ray Data jobs beside them.
SMALL = {name: {"ray_actor_options": {"num_cpus": 0.1}} for name in ("RagIngress", "Retriever", "Generator")}
ADD_OVERRIDES = ["ingest.extract.workers=1", "ingest.extract.cpus_per_worker=0.25", "ingest.progress=false",
                 "precompress.actors=1", "precompress.num_cpus_per_actor=0.25", "precompress.min_blocks=1",
                 "precompress.progress=false", "precompress.torch_threads=1", "precompress.index.threads=1"]


@pytest.fixture(scope="module")
def live_store(tmp_path_factory, checkpoint_and_store) -> Path:
    """A copy of the session's 4-document store, which this module publishes new versions into."""
    store = tmp_path_factory.mktemp("live") / "store"
    shutil.copytree(checkpoint_and_store[1], store)
    return store


# Named rag_url like tests/serve/conftest.py's: conftest's CPU check leaves a serving module's tests alone.
@pytest.fixture(scope="module")
def rag_url(ray_cluster, serve_settings, live_store):
    from ray import serve

    from serve.app import bind_app

    settings = serve_settings.model_copy(update=dict(store=str(live_store), store_watch_s=WATCH_S))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(bind_app(settings, SMALL), name="clara", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def client(rag_url, auth):
    with httpx.Client(base_url=rag_url, headers=auth, timeout=120) as c:
        yield c


def _published(store: Path) -> int:
    from clara_ray.store import layout

    return int(layout.current_version_dir(store).name[1:])


# ------------------------------------------------------------------ metrics and request logs
def _scrape() -> list:
    """Every sample on this cluster's Prometheus endpoint (Ray's metrics export port)."""
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    port = ray.nodes()[0]["MetricsExportPort"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples: list, name: str, **labels: str) -> float:
    """The sum over the series of `name` (every replica) with these labels."""
    return sum(s.value for s in samples if s.name == name and s.labels.get("application") == "clara"
               and all(s.labels.get(k) == v for k, v in labels.items()))


def _replica_log_lines(deployment: str) -> list[str]:
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    return [line for path in logs.glob(f"replica_clara_{deployment}_*.log") for line in path.read_text().splitlines()]


def _request_lines() -> dict[str, dict]:
    """The ingress's request log lines, by request id."""
    lines = {}
    for line in _replica_log_lines("RagIngress"):
        start = line.find('{"event": "request"')
        if start >= 0:
            entry, _ = json.JSONDecoder().raw_decode(line[start:])
            lines[entry["request_id"]] = entry
    return lines


def test_metrics_on_rays_endpoint_and_request_logs_count_each_request(rag_url, client, auth, docs, live_store):
    before = _scrape()
    rag = [client.post("/v1/rag", json={"question": q, "top_k": 1, "max_new_tokens": 2})
           for q in list(docs.values())[:3]]
    chat = [client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": docs["nile"]}],
                                                      "max_tokens": 3, "top_k": 2}) for _ in range(2)]
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": docs["paris"]}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}) as streamed:
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
    refused = client.post("/v1/rag", json={"question": "q", "top_k": 99})
    anonymous = httpx.post(rag_url + "/v1/rag", json={"question": "q"}, timeout=60)
    assert [r.status_code for r in rag + chat] == [200] * 5 and streamed.status_code == 200
    assert (refused.status_code, anonymous.status_code) == (422, 401)
    version = rag[0].json()["store_version"]
    assert version == _published(live_store)
    assert {r.json()["store_version"] for r in rag + chat} == {version} == {events[0]["store_version"]}
    tokens = sum(r.json()["usage"]["completion_tokens"] for r in chat) + events[-1]["usage"]["completion_tokens"]

    rag_route, chat_route = {"route": "/v1/rag"}, {"route": "/v1/chat/completions"}
    expected = {  # (metric, labels) -> increase
        ("ray_clara_requests_total", (("status", "200"), *rag_route.items())): 3,
        ("ray_clara_requests_total", (("status", "422"), *rag_route.items())): 1,
        ("ray_clara_requests_total", (("status", "401"), *rag_route.items())): 1,
        ("ray_clara_requests_total", (("status", "200"), *chat_route.items())): 3,
        ("ray_clara_request_seconds_count", tuple(rag_route.items())): 5,
        ("ray_clara_retrieval_seconds_count", tuple(rag_route.items())): 3,
        ("ray_clara_generation_seconds_count", tuple(rag_route.items())): 3,
        ("ray_clara_retrieval_seconds_count", tuple(chat_route.items())): 3,
        ("ray_clara_generation_seconds_count", tuple(chat_route.items())): 3,
        ("ray_clara_generated_tokens_total", tuple(chat_route.items())): tokens,
        # One client, one request at a time: every model call holds one question (Ray's histograms export
        # bucket counts; their _sum is estimated from the buckets, so it cannot be checked exactly).
        ("ray_clara_batch_size_count", (("deployment", "Retriever"),)): 6,
        ("ray_clara_batch_size_bucket", (("deployment", "Retriever"), ("le", "1.0"))): 6,
        ("ray_clara_batch_size_count", (("deployment", "Generator"),)): 5,  # a stream is not batched
        ("ray_clara_queue_wait_seconds_count", (("deployment", "Retriever"),)): 6,
    }

    def increases(samples):
        return {key: _value(samples, key[0], **dict(key[1])) - _value(before, key[0], **dict(key[1]))
                for key in expected}

    deadline = time.monotonic() + 60  # Ray's agent exports every ~10 s
    while (now := increases(after := _scrape())) != expected and time.monotonic() < deadline:
        time.sleep(2)
    assert now == expected
    assert _value(after, "ray_clara_store_version", deployment="Retriever") == version
    assert _value(after, "ray_clara_store_documents", deployment="Retriever") == len(docs)
    assert _value(after, "ray_clara_request_seconds_bucket", le="+Inf", **rag_route) - \
        _value(before, "ray_clara_request_seconds_bucket", le="+Inf", **rag_route) == 5

    # One log line per request, found by the id Serve returns; never the token, nor the question.
    ids = {r.headers["x-request-id"]: r for r in rag + chat + [refused, anonymous]}
    deadline = time.monotonic() + 20
    while not set(ids) <= set(lines := _request_lines()) and time.monotonic() < deadline:
        time.sleep(1)
    for rid, response in ids.items():
        line = lines[rid]
        assert line["status"] == response.status_code and line["route"] == response.url.path
        assert line["total_s"] > 0 and "question" not in line
        if response.status_code == 200:
            assert line["store_version"] == version and line["top_k"] in (1, 2)
            assert 0 < line["retrieve_s"] <= line["total_s"] and line["generate_s"] > 0
    text = "\n".join(_replica_log_lines("RagIngress"))
    assert auth["Authorization"].split()[1] not in text and docs["nile"] not in text
