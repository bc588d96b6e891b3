"""`clara export` writes, from any checkpoint a run kept, the model directory its final step would
have written (Ray Train, 2 workers, the tiny model under the batch rule)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import CENTERED, center_distances, tiny_stage_config


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {f"{file.relative_to(directory)}:{name}": tensor for file in sorted(directory.rglob("*.safetensors"))
            for name, tensor in load_file(str(file)).items()}


def _config(directory: Path) -> dict:
    return json.loads((directory / "clara_config.json").read_text())


def test_a_kept_checkpoint_exports_as_the_final_step_does(ray_cluster, tmp_path):
    from clara_ray import CLaRa
    from clara_ray.config import ConfigError
    from clara_ray.train.export import export_checkpoint
    from clara_ray.train.trainer import train_stage

    cfg = tiny_stage_config("compress_pretrain", tmp_path, "run", overrides=CENTERED)
    final_dir = Path(train_stage(cfg).model_dir)

    step, latest_dir = export_checkpoint(cfg, out=tmp_path / "latest")
    assert step == 2
    final, latest = _tensors(final_dir), _tensors(latest_dir)
    assert final.keys() == latest.keys() and final
    assert all(torch.equal(final[k], latest[k]) for k in final), "the last checkpoint exports other weights"
    assert _config(latest_dir) == _config(final_dir)

    step, first_dir = export_checkpoint(cfg, step=1)
    assert first_dir == tmp_path / "run" / "model-step1"
    first = _tensors(first_dir)
    changed = {k.split(":")[0] for k in final if not torch.equal(final[k], first[k])}
    # step 2 moved what stage 1 trains; the query reasoner it does not train starts alike in both (the run's seed)
    assert {"adapters/compressor.safetensors", "adapters/generator.safetensors"} <= changed
    assert "adapters/query_reasoner.safetensors" not in changed
    # the step-1 checkpoint's running mean memory was recomputed under its own weights
    model = CLaRa.from_pretrained(first_dir, device="cpu")
    nearest, to_all = center_distances(model)
    assert nearest < 1e-4 * float(model.memory_center.norm()) and to_all > 100 * nearest

    with pytest.raises(ConfigError, match=r"keeps no checkpoint of step 7; it keeps steps 1, 2"):
        export_checkpoint(cfg, step=7)
    other_model = tiny_stage_config("compress_pretrain", tmp_path, "run", overrides=[*CENTERED, "model.lora.r=2"])
    with pytest.raises(ValueError, match=r"mp_rank_00_model_states.pt: weights do not fit"):
        export_checkpoint(other_model, out=tmp_path / "other")
    assert not (tmp_path / "other").exists()
