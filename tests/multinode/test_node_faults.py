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


def _kill_a_worker_node_when(ready, cluster, actor_class: str, killed: list, timeout: float = 600) -> threading.Thread:
    """A thread that, once `ready()`, kills the (non-head) node of an alive `actor_class` actor; it
    appends (killed node, nodes the actors were on) to `killed`."""
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed:
            if ready():
                nodes = {a.node_id for a in alive_actors(actor_class)}
                victims = sorted(nodes & set(cluster.worker_ids()))
                if victims:
                    cluster.kill(victims[0])
                    killed.append((victims[0], nodes))
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
    cfg = tiny_stage_config("compress_pretrain", f"s3://{bucket}/runs", name, overrides=[
        f"run.storage_endpoint={s3_endpoint}", f"run.output_dir={tmp_path / 'model'}",
        "resources.placement_strategy=STRICT_SPREAD", f"max_steps={steps}", "checkpoint.every_steps=1",
        f"checkpoint.keep={steps}", "run.max_failures=2"])
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
    assert len(nodes_before_the_kill) == 2, "STRICT_SPREAD put both workers on one node"
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
    options = {"RagIngress": {"ray_actor_options": {"num_cpus": 0.1, "resources": {HEAD: 0.01}}},
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
    print(f"{len(results)} requests; in flight at the replica kill {inflight_replica}, at the node kill "
          f"{inflight_node}; failed: replica {len(load.failed('replica killed'))}, node {len(load.failed('node killed'))}; "
          f"slowest {max(r[3] for r in results):.1f}s")
    assert not load.failed("start")
    assert len(load.failed("replica killed")) <= inflight_replica
    # A lost node also fails requests sent in the seconds before Serve stops routing to its replicas
    # (measured: up to 11 beyond the 16 in flight); bounded here, listed in docs/reliability.md.
    assert len(load.failed("node killed")) <= inflight_node + CLIENTS
    assert not load.failed_within("replica replaced") and not load.failed_within("node replaced")
    # Never a hang: every request ended (an answer or an error) by Serve's request timeout, a few
    # seconds of scheduling aside, long before the client would have given up.
    assert not [r for r in results if r[2] in ("ReadTimeout", "ConnectTimeout", "PoolTimeout")]
    assert max(r[3] for r in results) < REQUEST_TIMEOUT_S + 10
