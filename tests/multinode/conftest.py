"""Fixtures of the node-failure tests: the multi-node cluster (multinode_helpers.py) and an
S3-protocol bucket on loopback."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
from multinode_helpers import MultiNodeCluster

from clara_ray.jobs.local_cluster import free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on loopback (a subprocess, so it does not share the driver's GIL) with
    credentials in the environment, which the cluster's nodes inherit as a real cluster's nodes
    would have theirs."""
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"moto S3 server on {url} did not start")
            time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(timeout=10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="clara-runs")
    return "clara-runs"


@pytest.fixture(scope="module")
def multinode(s3_endpoint, start_local_ray):
    """The module's multi-node cluster. The session's one-node cluster (tests/conftest.py) is
    shut down meanwhile, as a driver attaches to one cluster at a time, and started again after."""
    import ray

    had_local = ray.is_initialized()
    ray.shutdown()
    cluster = MultiNodeCluster()
    try:
        yield cluster
    finally:
        cluster.shutdown()
        if had_local:
            start_local_ray()


@pytest.fixture()
def nodes(multinode):
    """The module's cluster with its full set of worker nodes (a test before may have killed one)."""
    multinode.restore()
    return multinode
