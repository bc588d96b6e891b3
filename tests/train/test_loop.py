"""Pieces of the worker loop that run without a cluster: model set-up per stage, checkpointing."""
from __future__ import annotations

import copy

import pytest
import torch

from train_helpers import SAMPLE, STAGE_DATA, TINY_MODEL


def _gradients(model, records, stage) -> dict[str, torch.Tensor]:
    model.train()
    model(records, stage).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("stage", ["compress_pretrain", "instruct", "end_to_end"])
def test_gradient_checkpointing_gives_the_gradients_of_the_plain_backward(stage):
    # The recompute in backward must run each layer under the adapter of its own forward
    # (compressor / query reasoner), not the generator's that is active by then.
    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.data.records import read_records, trained_adapters
    from clara_ray.train.loop import enable_gradient_checkpointing

    torch.manual_seed(0)
    model = CLaRa.from_config(CLaRaConfig(**TINY_MODEL), device="cpu")  # LoRA dropout 0
    model.prepare_stage(stage)
    with torch.no_grad():  # fresh adapters are the identity (B = 0): make each one change its layers, as training does
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    checkpointed = copy.deepcopy(model)  # same weights and prompt-sampling state
    enable_gradient_checkpointing(checkpointed)
    assert checkpointed.language_model.is_activation_checkpointing

    records = read_records(SAMPLE / STAGE_DATA[stage], stage)[:2]
    expected = _gradients(model, records, stage)
    actual = _gradients(checkpointed, records, stage)

    assert expected.keys() == actual.keys() and all(g is not None for g in actual.values())
    for adapter in trained_adapters(stage):
        assert any(g.abs().sum() > 0 for name, g in expected.items() if f".{adapter}." in name), adapter
    wrong = {name: float((actual[name] - g).abs().max() / g.abs().max().clamp(min=1e-12))
             for name, g in expected.items() if not torch.allclose(actual[name], g, rtol=1e-4, atol=1e-6)}
    assert not wrong, f"{len(wrong)}/{len(expected)} gradients differ (max abs diff / max abs grad): " + \
        ", ".join(f"{name} {diff:.3g}" for name, diff in sorted(wrong.items(), key=lambda kv: -kv[1])[:4])


@pytest.mark.parametrize("stage", ["compress_pretrain", "instruct"])
def test_memory_monitor_scores_own_against_swapped_documents(stage, tmp_path):
    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.config import load_config
    from clara_ray.train.config import TrainConfig
    from clara_ray.train.loop import MemoryMonitor
    from train_helpers import REPO

    cfg = load_config(TrainConfig, REPO / "configs" / "train" / "cpu" / "compress_pretrain.yaml", [
        f"stage={stage}", f"init_from={tmp_path}", f"monitor.path={SAMPLE / STAGE_DATA[stage]}", "monitor.records=4"])
    monitor = MemoryMonitor(cfg)
    docs = {tuple(r.docs) for r in monitor.records}
    assert all(a.docs != b.docs and tuple(b.docs) in docs for a, b in zip(monitor.records, monitor.swapped))
    torch.manual_seed(0)
    model = CLaRa.from_config(CLaRaConfig(**TINY_MODEL), device="cpu")
    model.train()
    out = monitor.measure(model)
    assert model.training  # restored
    assert monitor.measure(model) == out  # deterministic: dropout off, the same prompt templates
    model.eval()
    model._rng = __import__("random").Random(0)
    own = sum(float(model([r], stage).ce) for r in monitor.records) / 4
    assert out["heldout_ce_own"] == pytest.approx(own, rel=1e-5)
    assert out["memory_gap"] == pytest.approx(out["heldout_ce_other"] - out["heldout_ce_own"])
    memories = model.retrieval_vectors(model.compress_documents(list(dict.fromkeys(
        d for r in monitor.records for d in r.docs))))
    cosines = memories @ memories.T
    off_diagonal = cosines[~torch.eye(len(cosines), dtype=torch.bool)]
    assert out["memory_similarity"] == pytest.approx(float(off_diagonal.mean()), abs=1e-5)
    assert out["read_similarity"] == pytest.approx(out["memory_similarity"], abs=1e-5)  # memory_norm none
    # centred on exactly their mean, the memories the generator reads share nothing
    states = model.compress_documents(list(dict.fromkeys(d for r in monitor.records for d in r.docs)))
    model.config.memory_norm = "centered"
    model.memory_center.copy_(states.mean(0))
    model.memory_center_batches.fill_(1)
    centred = monitor.measure(model)
    assert centred["memory_similarity"] == pytest.approx(out["memory_similarity"], abs=1e-5)
    assert centred["read_similarity"] < min(0.05, out["memory_similarity"] - 0.1)
