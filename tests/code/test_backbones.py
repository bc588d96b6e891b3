import json

import pytest

from clara_ray import backbones


def test_named_backbones_resolve_to_verified_hf_dirs():
    path = backbones.resolve_backbone(backbones.TINY_RANDOM)
    manifest = json.loads((backbones.cache_dir() / "tiny-random" / "clara_backbone.json").read_text())
    assert manifest["checksums"] and path.endswith("tiny-random")


def test_corrupted_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CLARA_RAY_CACHE", str(tmp_path))
    built = []

    def build(out):
        built.append(out)
        (out / "model.safetensors").write_bytes(b"weights")

    target = backbones._ensure_cached("tiny-random", build)
    (target / "model.safetensors").write_bytes(b"corrupt")
    backbones._ensure_cached("tiny-random", build)
    assert len(built) == 2 and (target / "model.safetensors").read_bytes() == b"weights"


def test_local_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(backbones.BackboneError, match="no config.json"):
        backbones.resolve_backbone(str(tmp_path))
