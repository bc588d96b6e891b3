"""Real `ray start --head` cluster on loopback; jobs go through the job-submission API."""
import pytest

from clara_ray.jobs import JobFailed, LocalRayCluster, submit_and_wait


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
    assert not [(p, p.cmdline(), p.ppid()) for p in started if p.is_running() and p.status() != "zombie"]  # none outlives stop()
    # Stopping the local cluster ends only its own processes: this session's cluster still works.
    assert ray_cluster.get(ray_cluster.put(41)) + 1 == 42
