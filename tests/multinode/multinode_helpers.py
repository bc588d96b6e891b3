"""A multi-node Ray cluster on 127.0.0.1, for the node-failure tests.

`ray.cluster_utils.Cluster` starts a head and worker raylets on this machine as `ray start` does on
separate hosts: each node has its own raylet, object store and worker processes, so killing a node
(its raylet and every worker on it) is what a preempted host looks like to the rest of the cluster.
Every node carries a custom resource naming its role, so a test can force placement.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

from clara_ray.jobs.local_cluster import free_port

HEAD = "head_node"  # custom resource only the head has (drivers' side: Serve's ingress)
WORKER = "worker_node"  # custom resource every worker node has
WORKER_CPUS = 3  # 2 training workers fit on one node after the other is lost, with a CPU for their data tasks


class MultiNodeCluster:
    """Head + worker nodes; `kill(node_id)` ends one worker node, `restore()` brings the count back."""

    def __init__(self, workers: int = 2):
        import ray
        from ray.cluster_utils import Cluster

        self.workers = workers
        self.saved_address = os.environ.get("RAY_ADDRESS")
        _loopback_only(True)
        # shutdown_at_exit=False: with it Ray's Node registers a SIGTERM handler, which Python allows on the
        # main thread only, and a test's watcher thread adds the replacement node; shutdown() ends the nodes.
        self.cluster = Cluster(shutdown_at_exit=False)
        try:
            _started(self._add_head)
            self.restore()
            # Workers' output stays in the session's logs: training and 16 clients would flood the test's.
            ray.init(address=self.cluster.address, log_to_driver=False)
        except BaseException:
            self.shutdown()
            raise

    def _add_head(self) -> None:
        gcs_port = free_port()
        # Every process started from here on (nodes, their workers) joins this cluster when it asks
        # for "auto" (Ray Train's helpers do), whatever other Ray clusters run on the machine.
        os.environ["RAY_ADDRESS"] = f"127.0.0.1:{gcs_port}"
        # No CPUs on the head, as on a real cluster: it runs the GCS, drivers, Serve's proxy and
        # controllers; all work lands on the worker nodes, so a test can always kill the node of one.
        self.cluster.add_node(num_cpus=0, resources={HEAD: 1}, gcs_server_port=gcs_port, include_dashboard=False,
                              **_node_args())

    def _add_worker(self) -> None:
        self.cluster.add_node(num_cpus=WORKER_CPUS, resources={WORKER: 1}, **_node_args())

    def restore(self) -> None:
        """Add worker nodes until there are `workers` of them again (after a kill)."""
        while len(self.cluster.worker_nodes) < self.workers:
            _started(self._add_worker)
        self.cluster.wait_for_nodes()

    @property
    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    def worker_ids(self) -> list[str]:
        return [node.node_id for node in self.cluster.worker_nodes]

    def kill(self, node_id: str) -> None:
        """SIGKILL a worker node's raylet, object store and workers, as a lost host."""
        node = next((n for n in self.cluster.worker_nodes if n.node_id == node_id), None)
        if node is None:
            raise ValueError(f"{node_id} is not a live worker node of this cluster (head: {self.head_id})")
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()
        _loopback_only(False)
        if self.saved_address is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = self.saved_address


def _started(add_node, attempts: int = 2) -> None:
    """Start a node, once more if its raylet misses Ray's start-up deadline (30 s), which a 2-core
    machine busy with other work can make it do."""
    for attempt in range(1, attempts + 1):
        try:
            return add_node()
        except Exception:
            if attempt == attempts:
                raise


def _node_args() -> dict:
    """Loopback, and fixed agent ports: with port 0 the raylet waits a bounded time for its agents to
    write the ports they took, which a loaded 2-core machine can miss (the raylet then exits)."""
    return {"node_ip_address": "127.0.0.1", "metrics_agent_port": free_port(), "metrics_export_port": free_port(),
            "dashboard_agent_listen_port": free_port(), "runtime_env_agent_port": free_port()}


def _loopback_only(on: bool) -> None:
    """Keep every process of the cluster on 127.0.0.1. A driver connecting to 127.0.0.1:port is sent
    to the host's network address by Ray (services.resolve_ip_for_localhost) unless Ray considers
    itself single-host, which this switch (read by each new node and worker from the environment)
    makes it do."""
    from ray._private import ray_constants

    if on:
        os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    else:
        os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
    ray_constants.ENABLE_RAY_CLUSTER = not on


def alive_actors(class_name: str) -> list[SimpleNamespace]:
    """Alive actors of a class with their `node_id` and `pid`, from the GCS's actor table (the
    public state API needs the dashboard, whose start a loaded 2-core machine can time out)."""
    from ray._private.state import actors

    return [SimpleNamespace(node_id=a["Address"]["NodeID"], pid=a["Pid"]) for a in actors().values()
            if a["ActorClassName"] == class_name and a["State"] == "ALIVE"]
