"""Real Ray Train + DeepSpeed runs (2 workers, ZeRO-2, gloo) on the tiny model: recovery and resumption.

The three stages chaining through exported checkpoints is checked where users run them, as Ray
jobs from the shipped specs (tests/cluster/test_job_specs_run.py)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _train_workers_of_this_process():
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if "RayTrainWorker" in " ".join(p.cmdline())]


def test_killed_worker_restarts_from_the_last_checkpoint_and_a_rerun_resumes(ray_cluster, tiny_stage, tmp_path):
    import os
    import signal
    import threading
    import time

    from clara_ray.train.trainer import train_stage

    cfg = tiny_stage("compress_pretrain", tmp_path, "killed",
                     overrides=["max_steps=8", "checkpoint.every_steps=2", "run.max_failures=1"])
    killed: list[int] = []

    def kill_one_worker_after_first_checkpoint():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            # The controller writes its snapshot once it has registered a reported checkpoint.
            if (tmp_path / "killed" / "checkpoint_manager_snapshot.json").exists():
                workers = _train_workers_of_this_process()
                if workers:
                    os.kill(workers[-1].pid, signal.SIGKILL)
                    killed.append(workers[-1].pid)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_one_worker_after_first_checkpoint, daemon=True)
    watcher.start()
    summary = train_stage(cfg)
    watcher.join(timeout=1)

    assert killed, "no Ray Train worker was found to kill"
    assert summary.final_metrics["step"] == summary.total_steps == 8
    # the second worker group restored a checkpoint instead of starting over
    assert 2 <= summary.resumed_from_step < 8

    # rerunning under the same name resumes from the last checkpoint instead of starting over
    more = train_stage(tiny_stage("compress_pretrain", tmp_path, "killed", overrides=["max_steps=9"]))
    assert more.resumed_from_step == 8 and more.final_metrics["step"] == 9
