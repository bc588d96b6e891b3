import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clara_ray import backbones


def test_named_backbones_resolve_to_verified_hf_dirs():
    path = backbones.resolve_backbone(backbones.TINY_RANDOM)
    manifest = json.loads((backbones.cache_dir() / "tiny-random" / "clara_backbone.json").read_text())
    assert manifest["checksums"] and path.endswith("tiny-random")


def test_local_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(backbones.BackboneError, match="no config.json"):
        backbones.resolve_backbone(str(tmp_path))


# Rank 1 needs the backbone first, as a Ray Train worker can on a new node; rank 0 only afterwards.
RANK = """
import sys
import torch.distributed as dist
from clara_ray.backbones import TINY_RANDOM, resolve_backbone

rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method=sys.argv[2], rank=rank, world_size=2)
if rank == 1:
    resolve_backbone(TINY_RANDOM)
dist.barrier()
if rank == 0:
    resolve_backbone(TINY_RANDOM)
dist.destroy_process_group()
"""


def assert_complete_hf_dir(directory: Path) -> None:
    """config.json, weights, and a manifest whose checksums are those weights' (checked by hand,
    not with the code under test)."""
    assert (directory / "config.json").is_file(), sorted(p.name for p in directory.iterdir())
    weights = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.safetensors")}
    assert weights, f"no weights in {directory}"
    assert json.loads((directory / "clara_backbone.json").read_text())["checksums"] == weights


@pytest.mark.slow
def test_a_rank_1_process_of_a_process_group_builds_a_complete_backbone(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    env = {**os.environ, "CLARA_RAY_CACHE": str(tmp_path / "cache")}  # a new machine: nothing built yet
    init = f"file://{tmp_path / 'rendezvous'}"
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(rank), init], env=env, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    errors = [rank.communicate(timeout=600)[1] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], "\n".join(e[-3000:] for e in errors)

    built = tmp_path / "cache" / "backbones"
    for name in (backbones.SMOLLM2, backbones.TINY_RANDOM):  # tiny-random's build needed SmolLM2's tokenizer
        assert_complete_hf_dir(built / name)
    model = AutoModelForCausalLM.from_pretrained(built / backbones.TINY_RANDOM)
    tokenizer = AutoTokenizer.from_pretrained(built / backbones.TINY_RANDOM)
    assert model.config.vocab_size == len(tokenizer) and model.num_parameters() > 0
