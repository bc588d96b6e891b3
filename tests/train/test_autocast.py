"""`deepspeed.autocast`: a real DeepSpeed engine (ZeRO-2, 2 gloo ranks) runs the forward's matmuls in
bf16 over fp32 weights, and the bf16-reduced update leaves both ranks with the same weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from train_helpers import SAMPLE, STAGE_DATA, tiny_stage_config

# One rank: a single optimizer step through the training loop's own `initialize`.
RANK = """
import json, sys
import torch, torch.distributed as dist
from clara_ray.data.records import read_records
from clara_ray.train.config import TrainConfig
from clara_ray.train.loop import initialize

rank, init, config, data = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
cfg = TrainConfig.model_validate_json(open(config).read())
model, engine, _, trainable = initialize(cfg, 1, "cpu")
matmuls = set()
for module in model.modules():
    if isinstance(module, torch.nn.Linear):
        module.register_forward_hook(lambda m, i, out: matmuls.add(str(out.dtype)))
before = [p.detach().clone() for p in trainable]
out = engine(read_records(data, cfg.stage)[2 * rank:2 * rank + 2], cfg.stage)
engine.backward(out.loss)
engine.step()
print(json.dumps({"loss": float(out.loss), "matmuls": sorted(matmuls),
                  "weights": sorted({str(p.dtype) for p in trainable}),
                  "moved": sum(not torch.equal(b, p.detach()) for b, p in zip(before, trainable)),
                  "checksum": float(sum(p.detach().double().sum() for p in trainable))}))
dist.destroy_process_group()
"""


def _one_step(tmp_path, name: str, overrides: list[str]) -> list[dict]:
    stage = "compress_pretrain"
    cfg = tiny_stage_config(stage, tmp_path, name, overrides=["batch.global_size=4", "batch.micro_size=2", *overrides])
    config = tmp_path / f"{name}.json"
    config.write_text(cfg.model_dump_json())
    init = f"file://{tmp_path / (name + '-rendezvous')}"
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(rank), init, str(config), str(SAMPLE / STAGE_DATA[stage])],
                              env={**os.environ, "LOCAL_RANK": str(rank)},  # as Ray Train sets it
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [rank.communicate(timeout=600) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], "\n".join(err[-3000:] for _, err in outputs)
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


@pytest.mark.slow
def test_bf16_autocast_runs_matmuls_in_bf16_and_keeps_fp32_weights_in_step_across_ranks(tmp_path):
    fp32 = _one_step(tmp_path, "fp32", [])
    mixed = _one_step(tmp_path, "autocast", ["deepspeed.autocast=bfloat16"])

    assert all(rank["matmuls"] == ["torch.float32"] for rank in fp32)
    assert all(rank["matmuls"] == ["torch.bfloat16"] for rank in mixed)
    for rank in fp32 + mixed:
        assert rank["weights"] == ["torch.float32"] and rank["moved"] > 0
    assert mixed[0]["checksum"] == mixed[1]["checksum"]  # one all-reduced update, applied on both ranks
    for exact, approx in zip(fp32, mixed):  # same records per rank: bf16 rounding only
        assert approx["loss"] == pytest.approx(exact["loss"], rel=0.02)
        assert approx["loss"] != exact["loss"]
