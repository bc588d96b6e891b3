"""Real `ray start --head` cluster on loopback; jobs go through the job-submission API."""
import time
import uuid

import psutil
import pytest

from clara_ray.jobs import JobFailed, LocalRayCluster, submit, submit_and_wait


def _with_marker(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or ())]


@pytest.mark.slow
def test_jobs_succeed_or_fail_with_their_log(tmp_path, ray_cluster):
    with LocalRayCluster(num_cpus=1) as cluster:
        started = cluster.processes()
        assert any(p.name().startswith("ray::") for p in started)  # the renamed agents are found
        ok_log = tmp_path / "ok.log"
        submit_and_wait(cluster.address, "hello", "python -c \"import ray; ray.init(); print('hello from', ray.get_runtime_context().get_job_id())\"",
                        ok_log, timeout=120)
        assert "hello from" in ok_log.read_text()
        bad_log = tmp_path / "bad.log"
        with pytest.raises(JobFailed, match=r"step 'broken' ended FAILED.*bad.log") as info:
            submit_and_wait(cluster.address, "broken", "python -c \"raise SystemExit('boom: bad input')\"",
                            bad_log, timeout=120)
        assert "boom: bad input" in info.value.log_path.read_text()
        # A job still running when the cluster stops: its driver runs in a Unix session of its own.
        marker = f"still-running-{uuid.uuid4().hex}"
        submit(cluster.address, "long", f"python -c \"import time; time.sleep(600)  # {marker}\"")
        deadline = time.monotonic() + 60
        while not _with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _with_marker(marker), "the long job's driver never started"
    assert not _with_marker(marker)  # stop() ended the job's driver too
    assert not [(p, p.cmdline(), p.ppid()) for p in started if p.is_running() and p.status() != "zombie"]  # none outlives stop()
    # Stopping the local cluster ends only its own processes: this session's cluster still works.
    assert ray_cluster.get(ray_cluster.put(41)) + 1 == 42
