"""A throwaway `ray start --head` cluster on loopback, the same kind `ray job submit` talks to.

Token auth is disabled for this local cluster only (Ray 2.60 enables it by default and the CLI
then fails against clusters started otherwise); production clusters keep their own setting.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil
from pathlib import Path


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768 up), where outgoing
    connections take their local ports: a port picked there can be taken again before Ray binds
    it. Above 20000 also keeps clear of Ray's worker ports (10002-19999)."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def _signal(send) -> None:
    try:
        send()
    except psutil.NoSuchProcess:
        pass


class LocalRayCluster:
    def __init__(self, num_cpus: int | None = None, temp_dir: str | Path | None = None, start_timeout: float = 120):
        self.num_cpus = num_cpus
        # Ray requires a short temp path (unix socket names are length-limited).
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="clray_", dir="/tmp"))
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.start_timeout = start_timeout
        self.session: int | None = None  # the Unix session `ray start` and the daemons it leaves run in

    @property
    def address(self) -> str:
        """The job-submission (dashboard) address."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def env(self) -> dict[str, str]:
        # Jobs run `python -m ...` with the cluster's PATH: make that this environment's python.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "PATH": path, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": self.gcs_address}

    def start(self, attempts: int = 3) -> "LocalRayCluster":
        """`ray start --head`; a start that loses a port race is cleaned up and retried on new ports."""
        for attempt in range(1, attempts + 1):
            result = self._ray_start()
            if result.returncode == 0:
                try:
                    self._wait_for_dashboard()
                    return self
                except RuntimeError:
                    if attempt == attempts:
                        self.stop()
                        raise
            elif attempt == attempts:
                self.stop()
                raise RuntimeError(f"ray start failed {attempts} times; last output:\n{result.stdout}\n{result.stderr}")
            self.stop()
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            self.gcs_port, self.dashboard_port = free_port(), free_port()
        return self

    def _ray_start(self) -> subprocess.CompletedProcess:
        """`ray start` in a session of its own: the daemons it leaves behind (and Ray's workers,
        whatever they rename themselves to) stay in it, which is how stop() finds every one."""
        with subprocess.Popen(self._start_args(), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) as process:
            self.session = process.pid
            stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def _start_args(self) -> list[str]:
        args = [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                f"--temp-dir={self.temp_dir}", "--include-dashboard=true", "--disable-usage-stats",
                # Own ports for every agent: a second cluster on the machine (a test session's,
                # another user's) already holds the defaults, and the job agent would not start.
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
        if self.num_cpus is not None:
            args.append(f"--num-cpus={self.num_cpus}")
        return args

    def _wait_for_dashboard(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"Ray dashboard at {self.address} did not come up in {self.start_timeout:.0f}s")

    def stop(self, grace: float = 15, rounds: int = 3) -> None:
        """End this cluster's processes only (`ray stop` would kill every Ray cluster on the machine,
        other drivers' included). A raylet can start a worker while the others go down: look again
        until none is left."""
        for _ in range(rounds):
            mine = self.processes()
            if not mine:
                break
            for process in mine:
                _signal(process.terminate)
            _, alive = psutil.wait_procs(mine, timeout=grace)
            for process in alive:
                _signal(process.kill)
            psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def processes(self) -> list[psutil.Process]:
        """The live processes of this cluster: those in the session of its `ray start`, those naming its
        temp dir on their command line, and the descendants of either (job drivers start sessions of
        their own)."""
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["cmdline"]):
            try:
                ours = (self.session is not None and os.getsid(process.pid) == self.session) or \
                    str(self.temp_dir) in " ".join(process.info["cmdline"] or ())
                if ours and process.status() != psutil.STATUS_ZOMBIE:
                    found[process.pid] = process
                    found.update((child.pid, child) for child in process.children(recursive=True))
            except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
