"""A live store and an observable endpoint (issue 25): metrics on Ray's Prometheus endpoint, one log
line per request, new versions swapped in under load, bad versions refused while the old one serves.

One Serve deployment for the whole module (it costs ~30 s to start), on a copy of the session's
store; the tests run in file order, the metrics test first, while its counters start from nothing.
"""
from __future__ import annotations

import json
import re
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


def _series(samples: list, name: str, **labels: str) -> list[float]:
    """The values of the series of `name` (one per replica) with these labels."""
    return [s.value for s in samples if s.name == name and s.labels.get("application") == "clara"
            and all(s.labels.get(k) == v for k, v in labels.items())]


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(_series(samples, name, **labels))


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
    # Gauges: the running replica's series (a replica of an earlier module may have left its own)
    assert version in _series(after, "ray_clara_store_version", deployment="Retriever")
    assert len(docs) in _series(after, "ray_clara_store_documents", deployment="Retriever")
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


# ------------------------------------------------------------------ live updates under load
class Clients:
    """`count` clients, each asking in a loop (/v1/rag and chat by turns) until stopped; every outcome kept."""

    def __init__(self, url: str, auth: dict, questions: list[str], count: int = 8):
        self.url, self.auth, self.questions = url, auth, questions
        self.outcomes: list[tuple[int | str, int | None]] = []  # (status or error, store_version)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._ask, args=(i,)) for i in range(count)]

    def _ask(self, number: int) -> None:
        with httpx.Client(base_url=self.url, headers=self.auth, timeout=120) as client:
            turn = number
            while not self.stop.is_set():
                question, turn = self.questions[turn % len(self.questions)], turn + 1
                try:
                    if turn % 2:
                        response = client.post("/v1/rag", json={"question": question, "top_k": 1, "max_new_tokens": 1})
                    else:
                        response = client.post("/v1/chat/completions", json={
                            "messages": [{"role": "user", "content": question}], "max_tokens": 1, "top_k": 1})
                    version = response.json().get("store_version") if response.status_code == 200 else None
                    self.outcomes.append((response.status_code, version))
                except Exception as exc:  # a dropped connection is a failed request too
                    self.outcomes.append((repr(exc), None))
                time.sleep(0.3)  # leave the shared cores some room for `clara add`

    def __enter__(self) -> "Clients":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=300)


def _top_document(client: httpx.Client, question: str) -> tuple[str, int]:
    response = client.post("/v1/rag", json={"question": question, "top_k": 1, "max_new_tokens": 1})
    assert response.status_code == 200, response.text
    return response.json()["documents"][0]["id"], response.json()["store_version"]


def _seconds_until(condition, limit: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, f"not within {limit} s"
    return time.monotonic() - started


def test_documents_added_under_load_are_cited_within_one_watch_interval_and_removed_likewise(
        client, rag_url, auth, docs, live_store, tmp_path):
    from clara_ray.config import load_config
    from clara_ray.store.updates import WORK_DIR, AddConfig, run_add, run_remove

    text = "Glaciers are slow rivers of ice that carve deep valleys into the mountains they flow down."
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "glaciers.md").write_text(text + "\n")
    cfg = load_config(AddConfig, None, ADD_OVERRIDES)
    old = _published(live_store)
    with Clients(rag_url, auth, list(docs.values())) as clients:
        added = run_add(live_store, tmp_path / "new", cfg)
        [chunk] = [json.loads(line) for line in (live_store / WORK_DIR / "raw_knowledge.jsonl").open()]
        assert chunk["text"] == text and (added["new_docs"], added["version"]) == (1, old + 1)
        # The query reasoner is the compressor here: a question equal to the chunk finds it first.
        cited = _seconds_until(lambda: _top_document(client, text) == (chunk["id"], old + 1), WATCH_S + 5)
        again = run_add(live_store, tmp_path / "new", cfg)  # the same documents: nothing to compress
        assert (again["new_docs"], again["already_stored"], again["version"]) == (0, len(docs) + 1, old + 1)
        removed = run_remove(live_store, [], ["glaciers.md"])
        assert (removed["removed"], removed["version"]) == (1, old + 2)
        gone = _seconds_until(lambda: _top_document(client, text)[0] != chunk["id"], WATCH_S + 5)
        time.sleep(1)  # the clients see the last version too
    swaps = re.findall(r"now serving v\d+ .* in ([\d.]+) s", "\n".join(_replica_log_lines("Retriever")))
    print(f"cited {cited:.2f} s after the publish, gone {gone:.2f} s after the removal; versions opened and "
          f"verified in {', '.join(swaps)} s; {len(clients.outcomes)} requests by 8 clients meanwhile")
    assert len(swaps) == 2
    failed = [o for o in clients.outcomes if o[0] != 200]
    assert not failed and len(clients.outcomes) >= 16, failed[:5]
    assert {version for _, version in clients.outcomes} == {old, old + 1, old + 2}


# ------------------------------------------------------------------ refused versions
def _other_checkpoints_version(tmp_path: Path, tiny_config, docs: dict[str, str]) -> Path:
    """A store of the same documents compressed by another (freshly initialised) checkpoint."""
    from clara_ray import CLaRa
    from clara_ray.store import DocRecord, StoreWriter, checkpoint_identity

    model = CLaRa.from_config(tiny_config, device="cpu")
    model.save_pretrained(tmp_path / "other-checkpoint")
    with StoreWriter(tmp_path / "other-store", checkpoint_identity(tmp_path / "other-checkpoint", model)) as writer:
        writer.add(model.compress_documents(list(docs.values())).numpy(),
                   [DocRecord(id=i, text=t) for i, t in docs.items()])
        writer.publish()
    return tmp_path / "other-store"


def _publish_by_hand(store: Path, version_dir: Path, shards: Path | None = None) -> str:
    """Put a version directory (and its shards) into `store` as its next version and point CURRENT at it."""
    from clara_ray.store import layout

    name = layout.version_name(layout.next_version_number(store))
    shutil.copytree(version_dir, store / layout.VERSIONS / name)
    for shard in (shards.iterdir() if shards else []):
        shutil.copytree(shard, store / "shards" / shard.name)
    layout.swap_current(store, name)
    return name


def test_another_checkpoints_version_and_a_corrupted_one_are_refused_while_the_old_one_answers(
        client, rag_url, docs, live_store, tmp_path, tiny_config):
    from clara_ray.store import layout

    serving = layout.current_version_dir(live_store)
    version = int(serving.name[1:])
    other = _other_checkpoints_version(tmp_path, tiny_config, docs)
    corrupted = tmp_path / "corrupted"
    shutil.copytree(serving, corrupted)
    index = corrupted / layout.INDEX_FILE
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    for bad, reason in ((layout.current_version_dir(other), "fingerprint"), (corrupted, "corrupted index")):
        name = _publish_by_hand(live_store, bad, other / "shards" if bad.parent.parent == other else None)
        assert httpx.post(rag_url + "/v1/admin/reload", timeout=60).status_code == 401  # operators only
        [replica] = client.post("/v1/admin/reload").json()["replicas"]
        assert (replica["version"], replica["swapped"]) == (version, False) and reason in replica["refused"], replica
        assert _top_document(client, docs["oxygen"]) == ("oxygen", version)
        time.sleep(WATCH_S + 0.5)  # the watcher, too, leaves it alone
        assert _top_document(client, docs["tokyo"]) == ("tokyo", version)
        logged = [line for line in _replica_log_lines("Retriever") if f"refusing {name}" in line]
        assert len(logged) == 1 and reason in logged[0], logged  # once, with the reason
    layout.swap_current(live_store, serving.name)
