"""Real Ray Train + DeepSpeed runs (2 workers, ZeRO-2, gloo) of the three stages on the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _adapter_bytes(model_dir, name):
    return (model_dir / "adapters" / f"{name}.safetensors").read_bytes()


def test_three_stages_chain_through_exported_checkpoints(ray_cluster, tiny_stage, tmp_path):
    from clara_ray import CLaRa
    from clara_ray.train.trainer import train_stage

    first = train_stage(tiny_stage("compress_pretrain", tmp_path, "s1"))
    assert first.resumed_from_step == 0 and first.final_metrics["step"] == 2
    # rerunning under the same name resumes from the last checkpoint instead of starting over
    s1 = train_stage(tiny_stage("compress_pretrain", tmp_path, "s1", overrides=["max_steps=3"]))
    assert s1.resumed_from_step == 2 and s1.final_metrics["step"] == 3
    s2 = train_stage(tiny_stage("instruct", tmp_path, "s2", init_from=s1.model_dir))
    s3 = train_stage(tiny_stage("end_to_end", tmp_path, "s3", init_from=s2.model_dir))

    for summary, stage in ((s2, "instruct"), (s3, "end_to_end")):
        assert summary.total_steps == 2 and summary.final_metrics["step"] == 2
        assert summary.final_metrics["loss"] > 0
        saved = json.loads((Path(summary.run_dir) / "summary.json").read_text())
        assert saved["stage"] == stage
    # stage 3 reports the batch Recall@k: the bundled end-to-end records carry pos_index
    assert any(k.startswith("recall@") for k in s3.final_metrics)

    m1, m2, m3 = (CLaRa.from_pretrained(s.model_dir, device="cpu") for s in (s1, s2, s3))
    assert m1.config.trained == {"compressor": "compress_pretrain", "generator": "compress_pretrain"}
    assert m2.config.trained["generator"] == "instruct"
    assert m3.config.trained["query_reasoner"] == "end_to_end"
    assert m3.config.trained["compressor"] == "instruct"
    d1, d2, d3 = (Path(s.model_dir) for s in (s1, s2, s3))
    # each stage trained what it should and froze the rest
    assert _adapter_bytes(d1, "compressor") != _adapter_bytes(d2, "compressor")
    assert _adapter_bytes(d2, "compressor") == _adapter_bytes(d3, "compressor")
    assert _adapter_bytes(d2, "generator") != _adapter_bytes(d3, "generator")


def _train_workers_of_this_process():
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if "RayTrainWorker" in " ".join(p.cmdline())]


def test_killed_worker_restarts_from_the_last_checkpoint(ray_cluster, tiny_stage, tmp_path):
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
