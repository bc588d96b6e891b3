"""Node failures on a multi-node Ray cluster (head + 2 worker raylets on 127.0.0.1), one cluster for
the module: training with S3-protocol checkpoints loses a node mid-stage; serving under 16 clients
loses a replica, then a node. The figures are in docs/reliability.md."""
from __future__ import annotations

import json
import threading
import time

import pytest
from multinode_helpers import alive_actors

pytestmark = pytest.mark.slow


def _kill_a_worker_node_when(ready, cluster, actor_class: str, killed: list, timeout: float = 600,
                             replace: bool = False) -> threading.Thread:
    """A thread that, once `ready()`, kills the (non-head) node of an alive `actor_class` actor (and,
    if `replace`, adds a node back, as an autoscaler would); it appends (killed node, nodes the
    actors were on) to `killed`."""
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed:
            if ready():
                nodes = {a.node_id for a in alive_actors(actor_class)}
                victims = sorted(nodes & set(cluster.worker_ids()))
                if victims:
                    cluster.kill(victims[0])
                    killed.append((victims[0], nodes))
                    if replace:
                        cluster.restore()
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _registered_checkpoints(fs, run_dir: str) -> list[dict]:
    """The checkpoints Ray Train registered for the run, in report order: (dir name, metrics)."""
    with fs.open_input_stream(f"{run_dir}/checkpoint_manager_snapshot.json") as stream:
        return json.loads(stream.read())["checkpoint_results"]


def test_training_on_two_nodes_survives_losing_one_and_resumes_from_the_s3_checkpoint(
        nodes, s3_endpoint, bucket, tmp_path):
    from pyarrow.fs import FileType, S3FileSystem
    from train_helpers import tiny_stage_config

    from clara_ray.train.trainer import train_stage

    name, steps = "two-nodes", 5

    def stage_config(max_steps: int):
        return tiny_stage_config("compress_pretrain", f"s3://{bucket}/runs", name, overrides=[
            f"run.storage_endpoint={s3_endpoint}", f"run.output_dir={tmp_path / 'model'}",
            "resources.placement_strategy=SPREAD", f"max_steps={max_steps}", "checkpoint.every_steps=1",
            f"checkpoint.keep={max_steps}", "run.max_failures=2"])

    cfg = stage_config(steps)
    fs = S3FileSystem(endpoint_override=s3_endpoint)
    run_dir = f"{bucket}/runs/{name}"

    def a_checkpoint_is_in_the_bucket() -> bool:
        # Ray Train writes its snapshot before the first checkpoint too: wait for a registered one.
        snapshot = f"{run_dir}/checkpoint_manager_snapshot.json"
        return fs.get_file_info(snapshot).type == FileType.File and bool(_registered_checkpoints(fs, run_dir))

    killed: list = []
    watcher = _kill_a_worker_node_when(a_checkpoint_is_in_the_bucket, nodes, "RayTrainWorker", killed)
    summary = train_stage(cfg)
    watcher.join(timeout=1)

    assert killed, "no training worker was on a worker node to kill"
    _, nodes_before_the_kill = killed[0]
    assert len(nodes_before_the_kill) == 2, "SPREAD put both workers on one node"
    assert summary.final_metrics["step"] == summary.total_steps == steps
    restored = summary.resumed_from_step
    assert 1 <= restored < steps
    # Every step registered exactly once, in order: none lost, none repeated past the restored one;
    # the steps after the kill come from the restarted group, which started at the restored step.
    checkpoints = _registered_checkpoints(fs, run_dir)
    assert [c["metrics"]["step"] for c in checkpoints] == list(range(1, steps + 1))
    assert [c["metrics"]["resumed_from_step"] for c in checkpoints] == [0] * restored + [restored] * (steps - restored)
    assert all(0 < c["metrics"]["loss"] < 100 for c in checkpoints)
    for c in checkpoints:  # the checkpoints live in the bucket, where any node can read them
        assert fs.get_file_info(f"{run_dir}/{c['checkpoint_dir_name']}").type == FileType.Directory
    assert (tmp_path / "model" / "clara_config.json").is_file()

    # A new run under the same name (a rerun after the job died, or more steps) resumes from the
    # bucket's last checkpoint instead of starting over.
    more = train_stage(stage_config(steps + 1))
    assert more.resumed_from_step == steps and more.final_metrics["step"] == steps + 1


# ------------------------------------------------------------------ batch jobs: precompress, ingest
def test_precompress_on_two_nodes_stores_every_document_once_after_losing_one(nodes, tiny_config, tmp_path):
    from multinode_helpers import WORKER
    from store_helpers import write_corpus

    from clara_ray import CLaRa
    from clara_ray.store import CompressedStore
    from clara_ray.store.job import PrecompressConfig, run_precompress
    from clara_ray.store.shards import SHARDS_DIR

    checkpoint, corpus, out, count = tmp_path / "checkpoint", tmp_path / "corpus.jsonl", tmp_path / "store", 1200
    model = CLaRa.from_config(tiny_config, device="cpu")
    model.prepare_stage("end_to_end")
    model.save_pretrained(checkpoint)
    write_corpus(corpus, 0, count)
    # One compressor per worker node (each has one WORKER resource); the lost one restarts on the
    # node that replaces its own.
    cfg = PrecompressConfig(batch_size=4, shard_size=8, actors=2, resources_per_actor={WORKER: 1}, progress=False,
                            index={"threads": 1})

    compressor = "MapWorker(MapBatches(Compressor))"

    def both_compressing() -> bool:  # the second actor may still be loading the model after 2 shards
        return (len(list((out / SHARDS_DIR).glob("shard-*"))) >= 2
                and len({a.node_id for a in alive_actors(compressor)}) == 2)

    killed: list = []
    watcher = _kill_a_worker_node_when(both_compressing, nodes, compressor, killed, replace=True)
    runs = _until_done(lambda: run_precompress(checkpoint, corpus, out, cfg))
    watcher.join(timeout=120)

    assert killed, "no compressor actor was on a worker node to kill"
    assert len(killed[0][1]) == 2, "the two compressor actors were not on two nodes"
    assert len(nodes.worker_ids()) == 2 and killed[0][0] not in nodes.worker_ids(), "no node replaced the lost one"
    ids = CompressedStore.open(out, expect_checkpoint=checkpoint).ids  # checksums of every shard and the index
    assert len(ids) == count and set(ids) == {f"d{i}" for i in range(count)}  # each document exactly once
    print(f"precompress: runs to the end after the node kill: {runs}")


def test_ingest_on_two_nodes_loses_one_mid_synthesis_and_ends_as_an_undisturbed_run(nodes, tmp_path):
    import shutil

    from ingest_helpers import ScriptedOpenAI, api_overrides, make_documents

    from clara_ray.ingest import run_ingest
    from clara_ray.ingest.config import IngestConfig
    from clara_ray.ingest.outputs import END_TO_END, ERRORS, INSTRUCT, PRETRAIN, RAW

    docs = tmp_path / "docs"
    make_documents(docs, with_pdf=False, with_bad=False)
    server = ScriptedOpenAI().start()

    def config(out):
        return IngestConfig.model_validate(dict(
            input=str(docs), out=str(out), progress=False, api=api_overrides(server),
            extract={"max_pages": 2, "workers": 1}, caption={"workers": 1},
            synthesis={"verify_rounds": 1, "workers": 2},
            negatives={"method": "random", "instruct_docs": 3, "end_to_end_docs": 4}))

    def snapshot(out):
        return {name: (out / name).read_bytes() for name in (PRETRAIN, INSTRUCT, END_TO_END, RAW, ERRORS, "summary.json")}

    reference, out = tmp_path / "reference", tmp_path / "out"
    try:
        run_ingest(config(reference))
        # The disturbed run starts from the reference's extraction and captions (their resume is
        # tested in tests/ingest), so the kill lands in synthesis, the long stage.
        for cached in ("work/extract", "work/caption", "images"):
            shutil.copytree(reference / cached, out / cached)
        server.delay_s = 0.3  # long enough a stage to lose a node in the middle of it
        killed: list = []
        watcher = _kill_a_worker_node_when(
            lambda: len(list((out / "work" / "synthesize").glob("part-*.parquet"))) >= 2,
            nodes, "MapWorker(MapBatches(Synthesizer))", killed)
        runs = _until_done(lambda: run_ingest(config(out)))
        watcher.join(timeout=1)
    finally:
        server.stop()

    # (Ray Data spreads the two workers over the nodes as best it can: usually one per node, both
    # on the killed one at times; either way that node's work is lost mid-stage.)
    assert killed, "no synthesis worker was on a worker node to kill"
    assert snapshot(out) == snapshot(reference)
    print(f"ingest: workers on {len(killed[0][1])} node(s) at the kill; runs to the end: {runs}")


def _until_done(job, attempts: int = 2) -> int:
    """Runs `job`, again if it failed (a node loss may end a run; its rerun resumes from what was
    committed); returns the number of runs it took."""
    for attempt in range(1, attempts):
        try:
            job()
            return attempt
        except Exception as exc:  # noqa: BLE001 - any failure of the run: the rerun must recover
            print(f"run {attempt} failed, rerunning: {type(exc).__name__}: {str(exc)[:300]}")
    job()
    return attempts


# ------------------------------------------------------------------ serving: replica and node loss
# Serve ends a request after REQUEST_TIMEOUT_S (408): without it, a request whose replica's node
# died waits until the cluster declares the node dead, which on a loaded machine took past a minute.
CLIENTS, REQUEST_TIMEOUT_S, CLIENT_TIMEOUT_S = 16, 45.0, 90.0


class Load:
    """`CLIENTS` threads posting /v1/rag back to back; each request is kept as (phase when it was
    sent, phase when it ended, HTTP status or exception name, seconds)."""

    def __init__(self, url: str, headers: dict, questions: list[str]):
        self.url, self.headers, self.questions = url, headers, questions
        self.phase, self.inflight, self.results = "start", 0, []
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def _client(self, index: int) -> None:
        import httpx

        with httpx.Client(base_url=self.url, headers=self.headers, timeout=CLIENT_TIMEOUT_S) as client:
            n = index
            while not self.stopping.is_set():
                question = self.questions[n % len(self.questions)]
                n += 1
                with self.lock:
                    self.inflight += 1
                    sent_in = self.phase
                began = time.monotonic()
                try:
                    outcome = client.post("/v1/rag", json={"question": question}).status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with self.lock:
                    self.inflight -= 1
                    self.results.append((sent_in, self.phase, outcome, time.monotonic() - began))

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def enter(self, phase: str) -> int:
        """Start a phase; returns the requests in flight at that moment."""
        with self.lock:
            self.phase = phase
            return self.inflight

    def wait_for(self, phase: str, count: int, timeout: float = 300) -> None:
        """Until `count` requests sent in `phase` have ended within it."""
        def done() -> int:
            return sum(r[0] == r[1] == phase for r in self.results)

        deadline = time.monotonic() + timeout
        while done() < count:
            assert time.monotonic() < deadline, f"only {done()} requests in {phase}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)

    def failed(self, ended_in: str) -> list:
        return [r for r in self.results if r[1] == ended_in and r[2] != 200]

    def failed_within(self, phase: str) -> list:
        """Failed requests sent and ended in `phase` (none in flight across a fault)."""
        return [r for r in self.results if r[0] == r[1] == phase and r[2] != 200]


def _wait_for_replicas(deployments: dict[str, int], timeout: float = 300) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    while True:
        status = serve.status().applications["clara"].deployments
        running = {name: status[name].replica_states.get("RUNNING", 0) for name in deployments}
        if running == deployments and all(status[n].status == "HEALTHY" for n in deployments):
            return
        assert time.monotonic() < deadline, f"replicas not back after {timeout}s: {running}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def rag_on_nodes(multinode, tmp_path_factory, tiny_config):
    """The RAG app with its ingress (and Serve's HTTP proxy) on the head and two Retriever and two
    Generator replicas, one of each per worker node."""
    multinode.restore()
    from multinode_helpers import HEAD, WORKER
    from ray import serve
    from serve_helpers import build_checkpoint_and_store, tiny_serve_settings

    from clara_ray.jobs.local_cluster import free_port
    from serve.app import bind_app

    settings = tiny_serve_settings(*build_checkpoint_and_store(tmp_path_factory.mktemp("serve"), tiny_config))
    per_worker = {"num_replicas": 2, "max_replicas_per_node": 1,
                  "ray_actor_options": {"num_cpus": 0.5, "resources": {WORKER: 0.01}}}
    options = {"RagIngress": {"ray_actor_options": {"num_cpus": 0, "resources": {HEAD: 0.01}}},
               "Retriever": per_worker, "Generator": per_worker}
    port = free_port()
    serve.start(proxy_location="HeadOnly",
                http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": REQUEST_TIMEOUT_S})
    serve.run(bind_app(settings, options), name="clara", route_prefix="/")
    yield f"http://127.0.0.1:{port}", settings
    serve.shutdown()


def test_serving_under_load_loses_only_in_flight_requests_when_a_replica_and_then_a_node_die(nodes, rag_on_nodes):
    import os
    import signal
    from collections import Counter

    from serve_helpers import DOCS, TOKEN

    url, _ = rag_on_nodes
    generators = alive_actors("ServeReplica:clara:Generator")
    assert len({a.node_id for a in generators}) == 2 and not {a.node_id for a in generators} & {nodes.head_id}
    load = Load(url, {"Authorization": f"Bearer {TOKEN}"}, list(DOCS.values())).start()
    try:
        load.wait_for("start", CLIENTS)

        # A Generator replica's process dies (OOM kill, segfault).
        inflight_replica = load.enter("replica killed")
        os.kill(generators[0].pid, signal.SIGKILL)
        _wait_for_replicas({"Generator": 2, "Retriever": 2})
        load.enter("replica replaced")
        load.wait_for("replica replaced", CLIENTS)

        # A whole worker node goes (preempted host): its Generator and Retriever replicas with it,
        # then the cluster gets a node back, as an autoscaler would bring one.
        victim = next(a.node_id for a in alive_actors("ServeReplica:clara:Generator"))
        inflight_node = load.enter("node killed")
        nodes.kill(victim)
        nodes.restore()
        _wait_for_replicas({"Generator": 2, "Retriever": 2})
        load.enter("node replaced")
        load.wait_for("node replaced", CLIENTS)
    finally:
        load.stop()

    results = load.results
    def outcomes(phase: str) -> dict:
        return dict(Counter(r[2] for r in load.failed(phase)))

    print(f"{len(results)} requests; in flight at the replica kill {inflight_replica}, at the node kill "
          f"{inflight_node}; failed: replica {len(load.failed('replica killed'))} {outcomes('replica killed')}, "
          f"node {len(load.failed('node killed'))} {outcomes('node killed')}; slowest {max(r[3] for r in results):.1f}s")
    assert not load.failed("start")
    # The ingress sends a call whose replica died to another one (replica_loss_retries), so at
    # most the requests in flight at the kill can fail (without the resend, a lost node failed up
    # to 27 with 16 in flight: requests routed to its replicas before Serve noticed).
    assert len(load.failed("replica killed")) <= inflight_replica
    assert len(load.failed("node killed")) <= inflight_node
    assert not load.failed_within("replica replaced") and not load.failed_within("node replaced")
    # Never a hang: every request ended (an answer or an error) by Serve's request timeout, a few
    # seconds of scheduling aside, long before the client would have given up.
    assert not [r for r in results if r[2] in ("ReadTimeout", "ConnectTimeout", "PoolTimeout")]
    assert max(r[3] for r in results) < REQUEST_TIMEOUT_S + 10
