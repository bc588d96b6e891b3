"""The vLLM backend: the generator adapter merged into plain HF weights, prompts as embeddings.

vLLM cannot combine LoRA with prompt embeddings, so the generator adapter is merged
(peft `merge_and_unload`) into an exported HF directory once per checkpoint. Prompt embeddings
(with the retrieved memory-token vectors scattered in) are built here by `model.generator_inputs`
and sent to a vLLM worker process: vLLM pins transformers < 5.20 (this project uses 5.23), so it
usually lives in its own venv (`settings.vllm.python`) and talks to us over a pipe (safetensors + JSON).
The engine holds the generator's weights; this process keeps only the input embedding of `model`.
"""
from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import torch

from serve.retrieved import Retrieved, memory_vectors
from serve.settings import ServeSettings, VllmSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class VllmBackendError(RuntimeError):
    pass


class VllmInputError(VllmBackendError, ValueError):
    """vLLM refused a prompt (e.g. longer than max_model_len; vLLM's VLLMClientError): the input's
    fault, so a ValueError like the hf backend's (serve/deployments.py INPUT_FAULTS); the worker stays up."""


def default_export_dir(checkpoint: str) -> Path:
    from clara_ray.cache import cache_root
    from clara_ray.store import checkpoint_fingerprint

    # Keyed by the checkpoint's content hash; never inside the checkpoint (that would change its hash).
    return cache_root() / "vllm-export" / checkpoint_fingerprint(checkpoint)[:24]


def export_generator(checkpoint: str, target: Path) -> Path:
    """Backbone + merged generator adapter as a plain HF directory, built once (see clara_ray.cache):
    every replica on a node needs it at start."""
    from clara_ray.cache import ensure_built, in_clean_process

    return ensure_built(target, in_clean_process(_write_export, checkpoint))


def _write_export(out: Path, checkpoint: str) -> None:
    from transformers import AutoTokenizer

    from clara_ray import CLaRa
    from clara_ray.backbones import resolve_backbone

    model = CLaRa.from_pretrained(checkpoint, device="cpu")
    model.merge_adapter("generator")
    language_model = model.language_model
    # Memory/special-token rows are only ever fed as embeddings: export the original table.
    language_model.set_input_embeddings(language_model.get_input_embeddings().base)
    language_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(resolve_backbone(model.config.backbone)).save_pretrained(out)


def vllm_python(settings: VllmSettings) -> Path:
    """The worker's interpreter: this one where vllm is installed, else the configured venv's."""
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    python = Path(settings.python)
    python = python if python.is_absolute() else REPO_ROOT / python
    if not python.exists():
        raise VllmBackendError(f"vLLM python {python} not found (vllm.python / $CLARA_VLLM_PYTHON); create the vLLM"
                               " venv (see README, Serving)")
    return python


def keep_input_embedding_only(model) -> None:
    """Free every weight of `model` except its input embedding (tied output head included), in place.

    What the vLLM path still runs here is `generator_inputs` (tokenizer, chat template, embedding lookup,
    memory vectors scattered in) and `decode_answers`: no transformer layer. A 7B backbone drops from
    ~14 GB to its ~0.3 GB embedding table.
    """
    embedding = model.embeddings
    keep = {id(t) for t in (*embedding.parameters(), *embedding.buffers())}
    for module in model.backbone.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if id(param) not in keep:  # meta tensors: shapes without storage
                setattr(module, name, torch.nn.Parameter(param.to("meta"), requires_grad=False))


class VllmBackend:
    def __init__(self, model, settings: ServeSettings):
        if settings.reader != "compressed":
            raise ValueError("the vllm backend serves the compressed reader only (use backend: hf for text)")
        python = vllm_python(settings.vllm)
        keep_input_embedding_only(model)
        self.model = model
        self.dtype = getattr(torch, settings.vllm.dtype)  # prompts are sent in the engine's dtype
        export = Path(settings.vllm.export_dir) if settings.vllm.export_dir else default_export_dir(settings.checkpoint)
        export_generator(settings.checkpoint, export)
        self.proc = subprocess.Popen(
            [str(python), str(Path(__file__).with_name("vllm_worker.py")), str(export),
             json.dumps(settings.vllm.engine_args())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if not self._receive().get("ready"):
            raise VllmBackendError("vLLM worker did not start")

    def _receive(self) -> dict:
        header = self.proc.stdout.read(8)
        if len(header) < 8:
            raise VllmBackendError(f"vLLM worker exited (code {self.proc.poll()}); see its stderr")
        return json.loads(self.proc.stdout.read(struct.unpack(">Q", header)[0]))

    def generate_ids(self, questions: list[str], retrieved: list[Retrieved], max_new_tokens: int) -> list[list[int]]:
        from safetensors.torch import save

        with torch.no_grad():
            embeds, mask = self.model.generator_inputs(questions, memory_vectors(retrieved, self.model))
        # One unpadded (seq, hidden) prompt per question: vLLM batches them itself.
        tensors = {f"prompt_{i}": embeds[i][mask[i].bool()].to("cpu", self.dtype).contiguous()
                   for i in range(len(questions))}
        tensors["max_tokens"] = torch.tensor(max_new_tokens)
        payload = save(tensors)
        self.proc.stdin.write(struct.pack(">Q", len(payload)) + payload)
        self.proc.stdin.flush()
        reply = self._receive()
        if "error" in reply:
            raise (VllmInputError if reply.get("input_error") else VllmBackendError)(reply["error"])
        return reply["token_ids"]

    def generate(self, questions: list[str], retrieved: list[Retrieved], max_new_tokens: int) -> list[str]:
        return self.model.decode_answers(self.generate_ids(questions, retrieved, max_new_tokens))

    def stream(self, question: str, retrieved: Retrieved, max_new_tokens: int) -> Iterator[str | list[int]]:
        # The offline LLM engine returns whole completions: one piece, then its ids.
        ids = self.generate_ids([question], [retrieved], max_new_tokens)[0]
        yield self.model.decode_answers([ids])[0]
        yield ids

    def close(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
