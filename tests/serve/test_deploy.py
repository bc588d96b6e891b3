"""`serve deploy serve/config.yaml` against a `ray start` cluster serves the application."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipelines.serve import DEFAULT_CONFIG
from clara_ray.jobs.local_cluster import free_port

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_serve_deploy_shipped_config(tmp_path, checkpoint_and_store, docs, auth):
    checkpoint, store = checkpoint_and_store
    gcs, dashboard, http = free_port(), free_port(), free_port()
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["http_options"]["port"] = http
    config["applications"][0]["args"].update(checkpoint=checkpoint, store=store,
                                             auth_token=auth["Authorization"].split()[1])
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    # --block keeps `ray start` in the foreground: ending its process group ends this cluster
    # only (`ray stop` would stop every Ray cluster on the machine).
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--num-cpus=2", f"--temp-dir=/tmp/ray_serve_{gcs}", "--include-dashboard=true"],
        cwd=Path(DEFAULT_CONFIG).parents[1], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.time() + 180
        while True:  # the dashboard (deploy API) comes up a few seconds after the GCS
            deployed = subprocess.run([str(BIN / "serve"), "deploy", str(path), "--address", address],
                                      env=env, capture_output=True, text=True)
            if deployed.returncode == 0:
                break
            assert time.time() < deadline, deployed.stderr
            time.sleep(3)
        url = f"http://127.0.0.1:{http}"
        deadline = time.time() + 300
        while True:
            try:
                response = httpx.post(url + "/v1/rag", json={"question": docs["tokyo"]}, headers=auth, timeout=60)
                if response.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "application did not come up"
            time.sleep(2)
        assert response.json()["documents"][0]["id"] == "tokyo"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
