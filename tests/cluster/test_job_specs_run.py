"""Every job spec in cluster/jobs/, unchanged, submitted in sequence to a `ray start --head`
cluster through its printed `ray job submit` line: ingest -> three training stages ->
precompress -> evaluate. Laptop-scale values come only from --set variables and overrides."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clara_ray.jobs import LocalRayCluster, cli_line, load_job_spec

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"backbone": "tiny-random", "compression_rate": 8, "doc_max_length": 32, "dtype": "float32",
              "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
TINY_TRAINING = ["batch.global_size=4", "batch.micro_size=1", "max_steps=2", "checkpoint.every_steps=1"]


def plan(api_url: str, shared: str) -> list[tuple[str, list[str]]]:
    """(spec, overrides) in pipeline order."""
    return [
        ("ingest", [f"api.base_url={api_url}", "api.api_key=test", "api.text_model=scripted",
                    "api.vision_model=scripted", "negatives.method=random", "synthesis.verify_rounds=1"]),
        ("train_compress_pretrain", [f"model={json.dumps(TINY_MODEL)}", *TINY_TRAINING]),
        ("train_instruct", TINY_TRAINING),
        ("train_end_to_end", TINY_TRAINING),
        # the index still builds in a Ray task (the spec's run_in=task), on CPUs here
        ("precompress", ["device=cpu", "num_gpus_per_actor=0", "num_cpus_per_actor=0.5", "actors=1", "batch_size=4",
                         "index_task.num_gpus=0", "index_task.num_cpus=0.5", "index_task.memory=null"]),
        ("evaluate", [f"data.path={shared}/data/end_to_end_data.jsonl", "device=cpu", "model_overrides.dtype=float32", "ray.num_gpus=0", "ray.num_cpus=1",
                      "ray.batch_size=4", "harness.max_new_tokens=4", "harness.retrievers=[clara]",
                      "harness.systems=[{name: clara, kind: clara}]"]),
    ]


@pytest.mark.slow
def test_every_stage_spec_succeeds_in_sequence_on_a_local_cluster(tmp_path):
    from ingest_helpers import ScriptedOpenAI  # a real loopback server speaking the OpenAI protocol

    from clara_ray.store import CompressedStore

    shared = tmp_path / "shared"
    (shared / "documents").mkdir(parents=True)
    for name in ("water_cycle.md", "honey_bees.html"):
        shutil.copy(REPO / "examples" / "documents" / name, shared / "documents")
    api = ScriptedOpenAI(bad_pair=False).start()
    variables = {"CLARA_SHARED": str(shared), "CLARA_RUNS": str(shared / "runs"),
                 "TRAIN_CONFIGS": "configs/train/cpu", "EVAL_CONFIG": "experiments/configs/eval_gpu.yaml",
                 "CHUNK_TOKENIZER": "tiny-random", "CHUNK_TOKENS": str(TINY_MODEL["doc_max_length"])}
    try:
        run_in_sequence(api.base_url, variables)
    finally:
        api.stop()

    data = shared / "data"
    assert sum(1 for _ in (data / "pretrain_data.jsonl").open()) > 0
    models = {stage: shared / "models" / stage for stage in ("compress_pretrain", "instruct", "end_to_end")}
    summaries = {stage: json.loads((shared / "runs" / stage / "summary.json").read_text()) for stage in models}
    for stage, summary in summaries.items():
        assert summary["stage"] == stage and summary["final_metrics"]["step"] == 2
        assert summary["resumed_from_step"] == 0  # a fresh run starts at step 0, not from another stage's state
        assert summary["final_metrics"]["loss"] > 0
    assert_stages_chained(models)
    # stage 3 reports the batch Recall@k: the synthesised end-to-end records carry pos_index
    assert any(k.startswith("recall@") for k in summaries["end_to_end"]["final_metrics"])
    store = CompressedStore.open(shared / "store", expect_checkpoint=shared / "models" / "end_to_end")
    assert len(store) == sum(1 for _ in (data / "raw_knowledge.jsonl").open())
    summary = json.loads((shared / "eval" / "end_to_end" / "summary.json").read_text())
    assert summary["num_questions"] == sum(1 for _ in (data / "end_to_end_data.jsonl").open())
    assert summary["generation"]["clara/normal"]["n"] == summary["num_questions"]


def assert_stages_chained(models: dict[str, Path]) -> None:
    """Each stage started from the previous stage's exported model, trained its adapters and froze the rest."""
    trained = {stage: json.loads((d / "clara_config.json").read_text())["trained"] for stage, d in models.items()}
    assert trained["compress_pretrain"] == {"compressor": "compress_pretrain", "generator": "compress_pretrain"}
    assert trained["instruct"]["generator"] == "instruct"
    assert trained["end_to_end"]["query_reasoner"] == "end_to_end"
    assert trained["end_to_end"]["compressor"] == "instruct"

    def adapter(stage: str, name: str) -> bytes:
        return (models[stage] / "adapters" / f"{name}.safetensors").read_bytes()

    assert adapter("compress_pretrain", "compressor") != adapter("instruct", "compressor")
    assert adapter("instruct", "compressor") == adapter("end_to_end", "compressor")
    assert adapter("instruct", "generator") != adapter("end_to_end", "generator")


def run_in_sequence(api_url: str, variables: dict[str, str]) -> None:
    shared = variables["CLARA_SHARED"]
    ray_cli = str(Path(sys.executable).with_name("ray"))
    with LocalRayCluster(num_cpus=2) as cluster:
        for name, overrides in plan(api_url, shared):
            spec = load_job_spec(REPO / "cluster" / "jobs" / f"{name}.yaml", variables, overrides)
            argv = shlex.split(cli_line(spec, cluster.address))
            argv[0] = ray_cli
            began = time.monotonic()
            done = subprocess.run(argv, cwd=REPO, env=cluster.env(), capture_output=True, text=True, timeout=900)
            print(f"{name}: {time.monotonic() - began:.0f}s")  # shown with -s; where CI time goes
            assert done.returncode == 0, f"{name} failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
            if name == "train_compress_pretrain":
                assert "step 2/2" in done.stdout  # progress lines reach the job log
