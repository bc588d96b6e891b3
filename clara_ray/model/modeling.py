"""CLaRa: compress documents into memory-token states, retrieve and generate from them.

Read top to bottom: construction (backbone + special tokens + three LoRA adapters), adapter
switching, compression, query encoding, generator inputs, the three stage losses, inference API,
and save/load. docs/design.md sections 1-5 and 7 describe the behaviour.
"""
from __future__ import annotations

import random
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from clara_ray.backbones import resolve_backbone
from clara_ray.data.records import (CompressPretrainRecord, EndToEndRecord, InstructRecord, RetrievalRecord,
                                    check_doc_span, trained_adapters)
from clara_ray.model import prompts
from clara_ray.model.configuration import ADAPTERS, CONFIG_FILE, CheckpointError, CLaRaConfig, weights_mismatch
from clara_ray.model.embeddings import ExtendedEmbedding
from clara_ray.model.prompt_head import PromptHeadCache, shared_head
from clara_ray.model.topk import cosine_scores, straight_through_topk

MEMORY_ROWS_FILE = "memory_embeddings.safetensors"
ADAPTER_DIR = "adapters"


@dataclass
class StageLoss:
    loss: torch.Tensor
    ce: torch.Tensor
    mse: torch.Tensor | None = None
    recall: dict[str, float] = field(default_factory=dict)  # stage 3, when gold indices are known
    num_tokens: int = 0  # real (unpadded) input tokens of every pass, for throughput logging
    num_positions: int = 0  # positions computed, padding included


@dataclass
class _Batch:
    """Token ids, mask and positions of a padded batch."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None = None
    shift: torch.Tensor | None = None  # added to each position (a window placed in its document)
    memory_index: torch.Tensor | None = None  # (B, n): where each row's memory tokens sit

    def memory_states(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, width, h) states -> (B, n, h) at the memory tokens."""
        return hidden.gather(1, self.memory_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

    def text_mask(self) -> torch.Tensor:
        """The attention mask without the memory tokens: (B, width), 1 on the text's tokens."""
        return self.attention_mask.scatter(1, self.memory_index, 0)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def position_ids(self) -> torch.Tensor:
        # Positions count real tokens only, so an input's result does not depend on how much
        # padding its batch-mates forced on it (same query encoding at training and serving).
        positions = (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return positions if self.shift is None else positions + self.shift


class CLaRa(nn.Module):
    # ------------------------------------------------------------------ construction
    def __init__(self, config: CLaRaConfig, backbone: nn.Module, tokenizer):
        super().__init__()
        self.config = config
        self.backbone = backbone  # peft PeftModel holding the three adapters
        self.tokenizer = tokenizer
        self.memory_ids = tokenizer.convert_tokens_to_ids(config.memory_tokens())
        self.encoder_id = tokenizer.convert_tokens_to_ids(config.encoder_token)
        self.separator_id = tokenizer.convert_tokens_to_ids(config.separator_token)
        self._lora_layers = [m for m in backbone.modules() if isinstance(m, LoraLayer)]
        self._rng = random.Random(0)
        self._active: str | None = None
        self._merged: str | None = None  # the adapter folded into the weights, see merge_adapter
        self._head_cache: PromptHeadCache | None = None  # see cache_prompt_head
        self._candidate_cache: dict[str, torch.Tensor] | None = None  # see cache_candidates
        self._stored_candidates = None  # a StoredCandidates the cache is filled from, see cache_candidates
        self._counted: list[int] | None = None  # [real tokens, positions] of the loss being computed
        self._prepared: tuple[str, list[str]] | None = None  # (stage, adapters it trains), see prepare_stage
        # Training computes logits only where a label is predicted (see _generator_ce); off, every
        # position gets logits as in a plain `labels=` forward (the reference cost).
        self.label_logits_only = True
        # Each distinct text of a batch is encoded once (see _encode); off, every copy is encoded.
        self.encode_distinct = True
        # memory_norm "centered": the running mean memory per slot, and how many batches made it.
        n, hidden = config.num_memory_tokens, backbone.get_input_embeddings().embedding_dim
        self.register_buffer("memory_center", torch.zeros(n, hidden), persistent=True)
        self.register_buffer("memory_center_batches", torch.zeros((), dtype=torch.long), persistent=True)
        self.use_adapter("generator")

    @classmethod
    def from_config(cls, config: CLaRaConfig, device: str | torch.device | None = None) -> "CLaRa":
        """A new CLaRa on `config.backbone` with freshly initialised adapters and memory rows."""
        source = resolve_backbone(config.backbone)
        tokenizer = AutoTokenizer.from_pretrained(source)
        lm = AutoModelForCausalLM.from_pretrained(
            source, dtype=config.torch_dtype, attn_implementation=config.attn_implementation
        )
        lm.requires_grad_(False)
        first_new_id = len(tokenizer)
        specials = [*config.memory_tokens(), config.encoder_token, config.separator_token]
        tokenizer.add_special_tokens({"additional_special_tokens": specials}, replace_extra_special_tokens=False)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm.set_input_embeddings(ExtendedEmbedding(lm.get_input_embeddings(), first_new_id, len(specials)))

        lora = LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules, bias="none", task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(lm, lora, adapter_name=ADAPTERS[0])
        for name in ADAPTERS[1:]:
            peft_model.add_adapter(name, lora)
        model = cls(config, peft_model, tokenizer)
        model.requires_grad_(False)
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.embeddings.new_rows.device

    @property
    def num_memory_tokens(self) -> int:
        return self.config.num_memory_tokens

    @property
    def hidden_size(self) -> int:
        return self.embeddings.embedding_dim

    @property
    def language_model(self) -> nn.Module:
        """The Hugging Face causal LM (with LoRA layers injected)."""
        return self.backbone.get_base_model()

    @property
    def embeddings(self) -> ExtendedEmbedding:
        return self.backbone.get_base_model().get_input_embeddings()

    # ------------------------------------------------------------------ adapters
    def use_adapter(self, name: str) -> None:
        """Activate one adapter. Unlike peft's set_adapter this leaves requires_grad alone, so
        one training step can run compressor and generator and still train both."""
        if name not in ADAPTERS:
            raise ValueError(f"unknown adapter {name!r}; expected one of {ADAPTERS}")
        self._check_not_merged(name)
        if name != self._active:
            for layer in self._lora_layers:
                layer._active_adapter = [name]
            self._active = name

    @contextmanager
    def adapter(self, name: str | None):
        """`with model.adapter("compressor"):` ...; None runs the bare backbone (no LoRA)."""
        previous = self._active
        if name is None:
            self._check_not_merged(None)
            with self.backbone.disable_adapter():
                yield
            return
        self.use_adapter(name)
        try:
            yield
        finally:
            self.use_adapter(previous)

    def enable_activation_checkpointing(self) -> None:
        """Recompute each decoder layer's activations in backward instead of keeping them.

        The active adapter is module state, and by backward time it is the generator's: a plain
        recompute would replay the compressor's and query reasoner's layers under it and give those
        adapters the gradients of the wrong activations. context_fn hands every checkpointed layer
        call a snapshot of the adapter selection it ran under, which its recompute re-enters."""
        # Non-reentrant: the frozen backbone's inputs need no grad for the LoRA grads to flow, and
        # only this mode takes a context_fn.
        self.language_model.activation_checkpointing_enable(
            {"use_reentrant": False, "context_fn": self._checkpoint_contexts})

    def _checkpoint_contexts(self) -> tuple[nullcontext, "_AdapterSelection"]:
        """torch.utils.checkpoint's context_fn: (forward context, recompute context) of one layer call."""
        return nullcontext(), _AdapterSelection(self._lora_layers)

    def merge_adapter(self, name: str) -> None:
        """Fold one adapter into the backbone's weights and drop every LoRA layer.

        For processes that only ever run one adapter (a serving replica, an export): the forward
        pass then costs what the bare backbone costs, without peft's per-layer LoRA work (about a
        third of a CPU decode step on SmolLM2). Irreversible: the other adapters are gone, and
        asking for one of them (or saving the model) raises.
        """
        self.use_adapter(name)
        self.backbone.base_model.merge_and_unload(adapter_names=[name])
        self._lora_layers = []
        self._merged = name

    def cache_prompt_head(self) -> None:
        """Compute the attention cache of the head all answer prompts share, once, and start
        every later answer generation after it (see prompt_head.py). Only for a merged generator:
        with trainable weights the cached keys and values would go stale."""
        if self._merged != "generator":
            raise RuntimeError("cache_prompt_head needs merge_adapter('generator') first")
        samples = [prompts.answer_turn([self._slot()], "Which one?"), prompts.answer_turn(["Some text."] * 2, "Why?")]
        head = shared_head([self._prompt_ids(system, user) for system, user in samples])
        self._head_cache = PromptHeadCache(self.language_model, head, self.device)

    def _check_not_merged(self, name: str | None) -> None:
        if self._merged is not None and name != self._merged:
            wanted = "the bare backbone" if name is None else f"the {name!r} adapter"
            raise RuntimeError(f"this CLaRa has its {self._merged!r} adapter merged into the weights "
                               f"(merge_adapter) and cannot run {wanted}; load the checkpoint again")

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        return [p for n, p in self.backbone.named_parameters() if f".{name}." in n and "lora_" in n]

    def reset_adapter(self, name: str) -> None:
        for layer in self._lora_layers:
            if name in layer.lora_A:
                layer.reset_lora_parameters(name, init_lora_weights=True)
        self.config.trained.pop(name, None)

    def copy_adapter(self, source: str, target: str) -> None:
        state = get_peft_model_state_dict(self.backbone, adapter_name=source)
        set_peft_model_state_dict(self.backbone, state, adapter_name=target)
        if source in self.config.trained:
            self.config.trained[target] = f"copied from {source}"

    def prepare_stage(self, stage: str, generator_init: str = "reset", train_compressor: bool = True) -> None:
        """Initialise adapters and set what trains for a stage (docs/design.md section 5).

        generator_init (stage 2 only): "reset" re-initialises the generator as the reference
        does; "previous" keeps the one stage 1 trained (a miniature-recipe option).
        train_compressor=False (stage 2 only, a miniature-recipe option): the compressor stays as
        stage 1 left it and only the generator learns to answer, so each document is compressed
        once (see cache_candidates) instead of forward and backward for every question.
        The query reasoner starts as a copy of the compressor unless a stage already trained it
        (a retrieval warm-up before stage 3).
        """
        if generator_init not in ("reset", "previous"):
            raise ValueError(f"generator_init must be 'reset' or 'previous', got {generator_init!r}")
        if not train_compressor and stage != "instruct":
            raise ValueError(f"train_compressor=False applies to the instruct stage only, not {stage}")
        self.requires_grad_(False)
        if stage == "compress_pretrain":
            self.embeddings.new_rows.requires_grad_(True)
        elif stage == "instruct":
            if generator_init == "reset":
                self.reset_adapter("generator")
        elif stage in ("retrieval_warmup", "end_to_end"):
            if self.config.trained.get("query_reasoner") not in ("retrieval_warmup", "end_to_end"):
                self.copy_adapter("compressor", "query_reasoner")
        else:
            raise ValueError(f"unknown stage {stage!r}")
        self._prepared = (stage, list(trained_adapters(stage, train_compressor)))
        for name in self._prepared[1]:
            for p in self.adapter_parameters(name):
                p.requires_grad_(True)

    def trains(self, adapter: str) -> bool:
        """Whether the prepared stage trains `adapter`."""
        return self._prepared is not None and adapter in self._prepared[1]

    def mark_trained(self, stage: str) -> None:
        prepared = self._prepared is not None and self._prepared[0] == stage
        for name in self._prepared[1] if prepared else trained_adapters(stage):
            self.config.trained[name] = stage

    # ------------------------------------------------------------------ tokenisation
    def _pad(self, rows: list[list[int]], labels: list[list[int]] | None = None, left: bool = True) -> _Batch:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long) if labels is not None else None
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(row)
            mask[i, span] = 1
            if lab is not None:
                lab[i, span] = torch.tensor(labels[i])
        to = lambda t: None if t is None else t.to(self.device)
        return _Batch(to(ids), to(mask), to(lab))

    def _memory_inputs(self, texts: Sequence[str], spans: Sequence[tuple[int, int] | None] | None = None) -> _Batch:
        """Encoder marker + BOS + text + EOS (truncated), padding, then the n memory tokens (memory_layout
        "end"; "interleaved": _interleaved_inputs).
        Documents and queries go through exactly this function. A text with a span (offset, length)
        is a window of a longer document and sits where it does there: its tokens from position
        offset on, EOS and the memory tokens after the document's `length` tokens, as if the rest of
        the document were masked out."""
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                                 max_length=self.config.doc_max_length)["input_ids"]
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        windows = spans is not None and any(span is not None for span in spans)
        if self.config.memory_layout == "interleaved":
            if windows:
                # CLaRaConfig refuses interleaved with window_positions "document", the only source of spans
                raise ValueError("memory_layout 'interleaved' cannot place windows by their doc_span")
            return self._interleaved_inputs(encoded, bos)
        bodies = [[self.encoder_id, *bos, *ids, self.tokenizer.eos_token_id] for ids in encoded]
        batch = self._pad(bodies, left=False)
        n = self.num_memory_tokens
        memory = torch.tensor(self.memory_ids, device=self.device).expand(len(bodies), n)
        width = batch.input_ids.shape[1]
        index = torch.arange(width, width + n, device=self.device).expand(len(bodies), n)
        shift = None
        if windows:
            shift = torch.zeros((len(bodies), width + n), dtype=torch.long, device=self.device)
            start = 1 + len(bos)  # the text's first token
            for i, (ids, span) in enumerate(zip(encoded, spans)):
                if span is not None:
                    check_doc_span(span, self.config.doc_max_length)
                    offset, length = span
                    shift[i, start:] = offset  # the window's tokens
                    shift[i, start + len(ids):] = max(length, offset + len(ids)) - len(ids)  # EOS, padding, memory
        return _Batch(torch.cat([batch.input_ids, memory], 1),
                      torch.cat([batch.attention_mask, torch.ones_like(memory)], 1), shift=shift, memory_index=index)

    def _interleaved_inputs(self, encoded: list[list[int]], bos: list[int]) -> _Batch:
        """memory_layout "interleaved": encoder marker + BOS, then the text and its EOS (L tokens) with
        memory token j right after their first ceil((j+1) L / n); then padding."""
        n = self.num_memory_tokens
        rows, where = [], []
        for ids in encoded:
            text = [*ids, self.tokenizer.eos_token_id]
            row, at, taken = [self.encoder_id, *bos], [], 0
            for j, memory_id in enumerate(self.memory_ids):
                cut = -(-(j + 1) * len(text) // n)  # ceil, in integers
                row += text[taken:cut]
                taken = cut
                at.append(len(row))
                row.append(memory_id)
            rows.append(row)
            where.append(at)
        batch = self._pad(rows, left=False)
        return replace(batch, memory_index=torch.tensor(where, device=self.device))

    def _prompt_ids(self, system: str, user: str) -> list[int]:
        text = prompts.render_chat(self.tokenizer, system, user)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _slot(self) -> str:
        return "".join(self.config.memory_tokens()) + self.config.separator_token

    # ------------------------------------------------------------------ compression
    def _encode(self, texts: Sequence[str], adapter: str, with_mse: bool = False,
                spans: Sequence[tuple[int, int] | None] | None = None):
        """Last-layer states at the memory positions: (B, n, hidden) [and the MSE term].
        `spans`: where each text sits in a longer document (see _memory_inputs), or None.

        With `encode_distinct`, a text listed several times (a paragraph's reconstruction and QA
        records in one micro-batch) goes through the backbone once and its states are repeated:
        the loss and the gradient are the ones of encoding each copy (the MSE term still weighs
        every row), up to LoRA dropout, which then draws one mask per distinct text."""
        spans = list(spans) if spans is not None else [None] * len(texts)
        index: dict[tuple[str, tuple[int, int] | None], int] = {}
        rows = [index.setdefault(key, len(index)) for key in zip(texts, spans)] if self.encode_distinct else None
        if rows is None or len(index) == len(texts):
            return self._encode_rows(texts, adapter, with_mse, spans=spans)
        rows = torch.tensor(rows, device=self.device)
        distinct_texts, distinct_spans = zip(*index)
        out = self._encode_rows(list(distinct_texts), adapter, with_mse, per_row_mse=True, spans=distinct_spans)
        if not with_mse:
            return out[rows]
        memory, mse = out
        return memory[rows], mse[rows].mean()

    def _encode_rows(self, texts: Sequence[str], adapter: str, with_mse: bool = False, per_row_mse: bool = False,
                     spans: Sequence[tuple[int, int] | None] | None = None):
        batch = self._memory_inputs(texts, spans)
        self._count(batch)
        with self.adapter(adapter):
            # The inner model skips the LM head: only hidden states are needed here.
            hidden = self.language_model.base_model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
            ).last_hidden_state
        memory = batch.memory_states(hidden)
        if not with_mse:
            return memory
        text_mask = batch.text_mask().unsqueeze(-1).to(hidden.dtype)
        text_mean = (hidden * text_mask).sum(1) / text_mask.sum(1).clamp(min=1)
        mse = (memory.mean(1).float() - text_mean.float()).pow(2).mean(-1)
        return memory, mse if per_row_mse else mse.mean()

    def _encode_by_length(self, texts: list[str], adapter: str, chunk: int = 16) -> torch.Tensor:
        """_encode over chunks of similar length (far less padding than one batch of all)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [None] * len(texts)
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            for i, state in zip(part, self._encode([texts[i] for i in part], adapter)):
                out[i] = state
        return torch.stack(out)

    def retrieval_vectors(self, states: torch.Tensor) -> torch.Tensor:
        """(B, n, hidden) -> (B, n*hidden) L2-normalised fp32: cosine becomes inner product."""
        return F.normalize(states.float().flatten(1), dim=-1)

    # ------------------------------------------------------------------ generator inputs
    def _generator_batch(self, turns: list[tuple[str, str]], targets: list[str] | None) -> _Batch:
        rows, labels = [], []
        for i, (system, user) in enumerate(turns):
            prompt = self._prompt_ids(system, user)
            if targets is None:
                rows.append(prompt)
                continue
            # The end-of-turn token closes the target and is part of the loss.
            answer = self.tokenizer(targets[i], add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            room = self.config.max_length - len(prompt)
            if room < 1:
                raise ValueError(f"generator prompt of {len(prompt)} tokens leaves no room for its target under "
                                 f"max_length={self.config.max_length}; raise max_length or use fewer documents")
            answer = answer[:room]
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        return self._pad(rows, labels if targets is not None else None, left=True)

    def _scatter_memory(self, batch: _Batch, compressed: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Embed the prompt and overwrite each slot's placeholders with its document's states."""
        embeds = self.embeddings(batch.input_ids)
        slots = torch.isin(batch.input_ids, torch.tensor(self.memory_ids, device=self.device))
        source = torch.cat([c.reshape(-1, c.shape[-1]) for c in compressed]) if isinstance(compressed, list) \
            else compressed.reshape(-1, compressed.shape[-1])
        if int(slots.sum()) != source.shape[0]:
            raise ValueError(f"prompt has {int(slots.sum())} memory slots but {source.shape[0]} vectors were given")
        return embeds.masked_scatter(slots.unsqueeze(-1), self._generator_scale(source).to(embeds.dtype))

    def _generator_scale(self, vectors: torch.Tensor) -> torch.Tensor:
        """Memory vectors (rows of whole n-vector memories) as the generator reads them (config.memory_norm)."""
        if self.config.memory_norm == "none":
            return vectors
        if self.config.memory_norm == "centered":
            vectors = self._centered(vectors)
        target = self.embeddings.token_norm
        return vectors * (target / vectors.float().norm(dim=-1, keepdim=True).clamp(min=1e-6)).to(vectors.dtype)

    def _centered(self, vectors: torch.Tensor) -> torch.Tensor:
        """Minus the mean memory. Training batches first update the running mean (batch norm's
        statistics, detached); memories that carry the compressor's gradient then lose their own
        batch's mean under memory_center_training "batch", and everything else the running mean."""
        memories = vectors.reshape(-1, *self.memory_center.shape)
        if self.training:
            with torch.no_grad():
                mean = memories.float().mean(0)
                m = self.config.memory_center_momentum if int(self.memory_center_batches) else 0.0
                self.memory_center.mul_(m).add_(mean, alpha=1 - m)
                self.memory_center_batches += 1
            if self.config.memory_center_training == "batch" and memories.requires_grad and _distinct(memories) > 1:
                return (memories - memories.mean(0)).reshape(vectors.shape)
        elif not int(self.memory_center_batches):
            raise RuntimeError("memory_norm 'centered' needs the running mean memory a training stage computes; "
                               "this model has none (untrained, or saved before memory_center existed)")
        return (memories - self.memory_center.to(memories.dtype)).reshape(vectors.shape)

    @property
    def memory_center_lags(self) -> bool:
        """Whether the running mean memory lags what the compressor emits: the compressor trains
        under memory_center_training "batch", so no training batch reads that mean (recenter_memory)."""
        return (self.config.memory_norm == "centered" and self.config.memory_center_training == "batch"
                and self.trains("compressor"))

    def recenter_memory(self, documents: Sequence[tuple[str, tuple[int, int] | None]]) -> None:
        """The running mean memory set to these documents' mean under the weights as they are now
        (batch norm's recalibration), for what inference subtracts: an average over past batches
        lags a compressor that is still moving. `documents`: (text, span) as training read them."""
        texts, spans = zip(*dict.fromkeys(documents))
        with self._inference():
            states = self._encode(list(texts), "compressor", spans=self._window_spans(spans))
        with torch.no_grad():
            self.memory_center.copy_(states.float().mean(0))
            self.memory_center_batches.clamp_(min=1)

    def _window_spans(self, spans: Sequence[tuple[int, int] | None]) -> Sequence[tuple[int, int] | None] | None:
        """The windows' spans where model.window_positions places them in their documents, else None."""
        return spans if self.config.window_positions == "document" else None

    def _answer_turns(self, questions: Sequence[str], num_docs: Sequence[int]) -> list[tuple[str, str]]:
        return [prompts.answer_turn([self._slot()] * k, q) for q, k in zip(questions, num_docs)]

    def _compressed_prompts(self, questions: Sequence[str], compressed) -> tuple[_Batch, torch.Tensor]:
        batch = self._generator_batch(self._answer_turns(questions, [len(c) for c in compressed]), None)
        return batch, self._scatter_memory(batch, compressed)

    def generator_inputs(self, questions: Sequence[str], compressed) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (inputs_embeds, attention_mask) for answering from compressed documents."""
        batch, embeds = self._compressed_prompts(questions, compressed)
        return embeds, batch.attention_mask

    def _generator_ce(self, turns, targets, compressed) -> torch.Tensor:
        batch = self._generator_batch(turns, targets)
        self._count(batch)
        embeds = self._scatter_memory(batch, compressed)
        labels, keep = batch.labels, 0
        if self.label_logits_only:
            # Left padding puts every target at the end of its row: logits for the last
            # (longest target + 1) positions cover every predicted label, and the prompt, the
            # memory slots and the padding (most of a stage-2/3 sequence) need no vocabulary
            # projection. The LM's own forward still computes the loss (softcapping etc. kept).
            keep = int((labels != -100).sum(1).max()) + 1
            labels = labels[:, -keep:]
        with self.adapter("generator"):
            out = self.language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                      position_ids=batch.position_ids, labels=labels, logits_to_keep=keep)
        return out.loss

    def _count(self, batch: _Batch) -> None:
        if self._counted is not None:
            self._counted[0] += batch.real_tokens
            self._counted[1] += batch.attention_mask.numel()

    # ------------------------------------------------------------------ stage losses
    def forward(self, records: Sequence, stage: str) -> StageLoss:
        losses = {"compress_pretrain": self.compress_pretrain_loss, "instruct": self.instruct_loss,
                  "retrieval_warmup": self.retrieval_warmup_loss, "end_to_end": self.end_to_end_loss}
        if stage not in losses:
            raise ValueError(f"unknown stage {stage!r}")
        self._counted = [0, 0]
        try:
            out = losses[stage](records)
            out.num_tokens, out.num_positions = self._counted
        finally:
            self._counted = None
        return out

    def _with_mse(self, ce: torch.Tensor, mse: torch.Tensor) -> StageLoss:
        return StageLoss(ce + self.config.mse_weight * mse, ce.detach(), mse.detach())

    def compress_pretrain_loss(self, records: Sequence[CompressPretrainRecord]) -> StageLoss:
        compressed, mse = self._encode([r.docs[0] for r in records], "compressor", with_mse=True,
                                       spans=self._window_spans([r.doc_span for r in records]))
        turns, targets = [], []
        for r in records:
            if r.data_type == "qa":
                turns.append(prompts.qa_turn(self._slot()))
                targets.append(prompts.qa_target(r.question, r.answers))
            else:
                turns.append(prompts.paraphrase_turn(self._slot(), self._rng))
                targets.append(r.answers[0])
        return self._with_mse(self._generator_ce(turns, targets, compressed.unsqueeze(1)), mse)

    def instruct_loss(self, records: Sequence[InstructRecord]) -> StageLoss:
        docs = [d for r in records for d in r.docs]
        if self.trains("compressor"):
            compressed, mse = self._encode(docs, "compressor", with_mse=True)
        else:  # the MSE term only trains the compressor: nothing to add when it is frozen
            compressed, mse = self._frozen_compress(docs), None
        per_record = list(compressed.split([len(r.docs) for r in records]))
        turns = self._answer_turns([r.question for r in records], [len(r.docs) for r in records])
        ce = self._generator_ce(turns, [r.answer for r in records], per_record)
        return StageLoss(ce, ce.detach()) if mse is None else self._with_mse(ce, mse)

    def _candidate_scores(self, records: Sequence[EndToEndRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        """Query-reasoner cosine scores over each record's compressed candidates: ((B, Nmax)
        scores, -inf on padding; (B, Nmax, n, h) candidates)."""
        candidates, valid = self._compress_candidates([r.docs for r in records])
        queries = self._encode([r.question for r in records], "query_reasoner")
        scores = cosine_scores(queries.flatten(1), candidates.flatten(2)).masked_fill(~valid, float("-inf"))
        return scores, candidates

    def retrieval_warmup_loss(self, records: Sequence[RetrievalRecord]) -> StageLoss:
        """Multi-positive InfoNCE over cosine / tau (the optional warm-up of docs/design.md section 4): the gold
        candidates against the record's others; only the query reasoner receives gradient."""
        scores, _ = self._candidate_scores(records)
        logits = scores / self.config.topk_temperature
        gold = torch.zeros_like(scores, dtype=torch.bool)
        for i, r in enumerate(records):
            gold[i, r.pos_index] = True
        loss = (logits.logsumexp(-1) - logits.masked_fill(~gold, float("-inf")).logsumexp(-1)).mean()
        k = min(self.config.generation_top_k, scores.shape[1])
        return StageLoss(loss, loss.detach(), recall=_recall_at(scores.topk(k, -1).indices,
                                                                [r.pos_index for r in records]))

    def end_to_end_loss(self, records: Sequence[EndToEndRecord]) -> StageLoss:
        k = min(self.config.generation_top_k, *(len(r.docs) for r in records))
        scores, candidates = self._candidate_scores(records)
        weights, topk = straight_through_topk(scores, k, self.config.topk_temperature)
        selected = torch.einsum("bkn,bnmh->bkmh", weights.to(candidates.dtype), candidates)
        turns = self._answer_turns([r.question for r in records], [k] * len(records))
        ce = self._generator_ce(turns, [r.answer for r in records], selected)
        return StageLoss(ce, ce.detach(), recall=_recall_at(topk, [r.pos_index for r in records]))

    def cache_candidates(self, stored=None) -> None:
        """Keep every candidate's compressed vectors once computed (stage 3, retrieval warm-up,
        stage 2 with a frozen compressor). Valid only while the compressor is frozen.
        `stored`: a StoredCandidates (clara_ray.train.stored_candidates) to read vectors from first."""
        if any(p.requires_grad for p in self.adapter_parameters("compressor")):
            raise RuntimeError("cache_candidates needs a frozen compressor (this stage trains it)")
        self._candidate_cache = {}
        self._stored_candidates = stored

    @property
    def stored_candidates(self):
        """The store candidates are read from (see cache_candidates), or None."""
        return self._stored_candidates

    def _frozen_compress(self, texts: list[str]) -> torch.Tensor:
        """Compressor states without gradient or dropout (the compressor is frozen where this is
        used, so its noise would only blur the candidates); from the cache where enabled."""
        cache = self._candidate_cache
        if cache is not None and self._stored_candidates is not None:
            found = self._stored_candidates.lookup([t for t in texts if t not in cache])
            dtype = self.embeddings.new_rows.dtype  # bf16 on a GPU: what the compressor itself returns
            cache.update((t, v.to(self.device, dtype)) for t, v in found.items())
        todo = texts if cache is None else list(dict.fromkeys(t for t in texts if t not in cache))
        computed = None
        if todo:
            was_training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    computed = self._encode_by_length(todo, "compressor")
            finally:
                self.train(was_training)
        if cache is None:
            return computed
        cache.update(zip(todo, computed if computed is not None else []))
        return torch.stack([cache[t] for t in texts])

    def _compress_candidates(self, documents: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every question's candidates compressed (see _frozen_compress), padded to (B, Nmax, n, h)."""
        flat = self._frozen_compress([d for docs in documents for d in docs])
        groups = flat.split([len(d) for d in documents])
        width = max(len(g) for g in groups)
        padded = flat.new_zeros(len(groups), width, *flat.shape[1:])
        valid = torch.zeros(len(groups), width, dtype=torch.bool, device=flat.device)
        for i, g in enumerate(groups):
            padded[i, : len(g)] = g
            valid[i, : len(g)] = True
        return padded, valid

    # ------------------------------------------------------------------ inference API
    @contextmanager
    def _inference(self):
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def compress_documents(self, documents: Sequence[str]) -> torch.Tensor:
        """(N, n, hidden) memory-token states of each document."""
        with self._inference():
            return self._encode(list(documents), "compressor")

    def encode_queries(self, questions: Sequence[str]) -> torch.Tensor:
        """(Q, n, hidden) query-reasoner states, in the same space as compressed documents."""
        with self._inference():
            return self._encode(list(questions), "query_reasoner")

    def _generate_ids(self, batch: _Batch, max_new_tokens: int, embeds: torch.Tensor | None = None,
                      adapter: str | None = "generator", streamer=None) -> torch.Tensor:
        """Greedy new-token ids (B, T) after the left-padded prompts of `batch` (read as
        `embeds` when given: the prompts with memory vectors scattered in)."""
        if adapter == "generator" and "generator" not in self.config.trained:
            warnings.warn("generating with an untrained generator adapter (no stage has trained it)", stacklevel=3)
        inputs = {"attention_mask": batch.attention_mask}
        inputs |= {"input_ids": batch.input_ids} if embeds is None else {"inputs_embeds": embeds}
        if self._head_cache is not None:
            inputs = self._head_cache.arrange(batch.input_ids, inputs) or inputs
        with self.adapter(adapter):
            out = self.language_model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        # generate() returns the prompt ids too when it was given ids, only new ones for embeddings.
        return out if embeds is not None else out[:, batch.input_ids.shape[1]:]

    def decode_answers(self, ids) -> list[str]:
        """Answer texts from generated token ids (rows of a tensor or lists), specials dropped."""
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def generate_ids_from_compressed(self, questions: Sequence[str], compressed, max_new_tokens: int = 64,
                                     streamer=None) -> torch.Tensor:
        """Greedy new-token ids (B, T); compressed: (B, k, n, hidden) or a list of (k_i, n, hidden).
        A transformers streamer receives the tokens as they are decoded."""
        with self._inference():
            batch, embeds = self._compressed_prompts(questions, compressed)
            return self._generate_ids(batch, max_new_tokens, embeds, streamer=streamer)

    def generate_from_compressed_documents_and_questions(
        self, questions: Sequence[str], compressed, max_new_tokens: int = 64
    ) -> list[str]:
        """compressed: (B, k, n, hidden) or a list of (k_i, n, hidden)."""
        return self.decode_answers(self.generate_ids_from_compressed(questions, compressed, max_new_tokens))

    def generate_from_paraphrase(self, documents: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        with self._inference():
            compressed = self._encode(list(documents), "compressor").unsqueeze(1)
            batch = self._generator_batch([prompts.paraphrase_turn(self._slot()) for _ in documents], None)
            embeds = self._scatter_memory(batch, compressed)
            return self.decode_answers(self._generate_ids(batch, max_new_tokens, embeds))

    def generate_ids_from_text(self, questions: Sequence[str], documents: Sequence[Sequence[str]],
                               max_new_tokens: int = 64, adapter: str | None = "generator") -> torch.Tensor:
        """Greedy new-token ids (B, T) of text RAG on the same backbone: documents as plain text
        (adapter None: the bare backbone)."""
        with self._inference():
            batch = self._generator_batch(
                [prompts.answer_turn(list(docs), q) for q, docs in zip(questions, documents)], None)
            return self._generate_ids(batch, max_new_tokens, adapter=adapter)

    def generate_from_text(self, questions: Sequence[str], documents: Sequence[Sequence[str]],
                           max_new_tokens: int = 64, adapter: str | None = "generator") -> list[str]:
        return self.decode_answers(self.generate_ids_from_text(questions, documents, max_new_tokens, adapter))

    def prompt_length(self, question: str, documents: Sequence[str] | int) -> int:
        """Tokens of the generator's prompt for `question`, in the backbone's chat template:
        `documents` as text, or an int: that many compressed documents (memory slots)."""
        if isinstance(documents, int):
            documents = [self._slot()] * documents
        return len(self._prompt_ids(*prompts.answer_turn(list(documents), question)))

    def generate_from_questions(self, questions: Sequence[str], documents: Sequence[Sequence[str]],
                                max_new_tokens: int = 64) -> tuple[list[str], list[list[int]]]:
        """Retrieve the top-k of each question's candidates with the query reasoner, then answer."""
        with self._inference():
            k = min(self.config.generation_top_k, *(len(d) for d in documents))
            candidates, valid = self._compress_candidates(documents)
            queries = self._encode(list(questions), "query_reasoner")
            scores = cosine_scores(queries.flatten(1), candidates.flatten(2)).masked_fill(~valid, float("-inf"))
            topk = scores.topk(k, dim=-1).indices
            selected = candidates[torch.arange(len(questions), device=self.device).unsqueeze(1), topk]
            batch, embeds = self._compressed_prompts(questions, selected)
            return self.decode_answers(self._generate_ids(batch, max_new_tokens, embeds)), topk.tolist()

    def answer_ce_from_compressed(self, questions: Sequence[str], compressed, answers: Sequence[str]) -> list[float]:
        """Per question: stage 2's teacher-forced CE (nats per target token, end-of-turn included)
        of `answers` given its compressed documents (a list of (k_i, n, hidden)). Diagnostics only."""
        with self._inference():  # one question per forward, so each mean is over its own tokens
            return [self._generator_ce(self._answer_turns([q], [len(c)]), [a], [c]).item()
                    for q, c, a in zip(questions, compressed, answers)]

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path: str | Path) -> None:
        """config + one safetensors file per adapter + memory rows; the backbone by reference."""
        if self._merged is not None:
            raise RuntimeError(f"cannot save a CLaRa whose {self._merged!r} adapter is merged into its weights "
                               "(the adapters are no longer separable); save before merge_adapter")
        path = Path(path)
        (path / ADAPTER_DIR).mkdir(parents=True, exist_ok=True)
        for name in ADAPTERS:
            state = get_peft_model_state_dict(self.backbone, adapter_name=name)
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
                      str(path / ADAPTER_DIR / f"{name}.safetensors"))
        save_file({"new_rows": self.embeddings.new_rows.detach().cpu().contiguous(),
                   "memory_center": self.memory_center.detach().cpu().contiguous(),
                   "memory_center_batches": self.memory_center_batches.detach().cpu()}, str(path / MEMORY_ROWS_FILE))
        (path / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None,
                        **overrides) -> "CLaRa":
        """Load a saved CLaRa; `overrides` replace config fields (e.g. dtype, backbone path)."""
        path = Path(path)
        model = cls.from_config(CLaRaConfig.from_pretrained(path, **overrides), device=None)
        for name in ADAPTERS:
            file = path / ADAPTER_DIR / f"{name}.safetensors"
            if file.exists():
                try:
                    result = set_peft_model_state_dict(model.backbone, _read_weights(file), adapter_name=name)
                except RuntimeError as exc:  # torch's "size mismatch" for a tensor of another shape
                    why = weights_mismatch(exc)
                    raise CheckpointError(f"{file}: weights do not fit this backbone: {why}") from None
                if getattr(result, "unexpected_keys", None):
                    raise CheckpointError(f"{file}: weights do not fit this backbone: {result.unexpected_keys[:3]}")
            else:
                model.config.trained.pop(name, None)
        saved = _read_weights(path / MEMORY_ROWS_FILE)
        if "new_rows" not in saved:
            raise CheckpointError(f"{path / MEMORY_ROWS_FILE}: no new_rows tensor")
        rows = saved["new_rows"]
        if rows.shape != model.embeddings.new_rows.shape:
            raise CheckpointError(f"{path / MEMORY_ROWS_FILE}: shape {tuple(rows.shape)} does not fit "
                                  f"{tuple(model.embeddings.new_rows.shape)} (does an override change "
                                  f"doc_max_length or compression_rate of the saved model? overrides: "
                                  f"{sorted(overrides)})")
        with torch.no_grad():
            model.embeddings.new_rows.copy_(rows.to(model.embeddings.new_rows.dtype))
            if "memory_center" in saved:  # older checkpoints have none (and no "centered" memory_norm)
                model.memory_center.copy_(saved["memory_center"])
                model.memory_center_batches.copy_(saved["memory_center_batches"])
        return model.to(device) if device is not None else model


def _distinct(memories: torch.Tensor) -> int:
    """How many different memories a batch holds (a document listed twice is compressed once and
    repeated); with one, the batch's own mean would leave the generator nothing but zeros."""
    with torch.no_grad():
        return len(torch.unique(memories.flatten(1), dim=0))


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing (is the checkpoint directory complete?)") from None
    except (OSError, SafetensorError) as exc:  # unreadable, or not a safetensors file (a copy cut short)
        raise CheckpointError(f"{file}: unreadable weights ({exc})") from None


class _AdapterSelection:
    """Which adapter each LoRA layer runs (or LoRA off), read when made; `with` re-applies it.

    Sets peft's selection attributes directly, as use_adapter does: peft's set_adapter and
    enable_adapters would also flip requires_grad, in the middle of a backward. Reusable, as a
    second backward through a retained graph recomputes again."""

    def __init__(self, layers: list[LoraLayer]):
        self._layers = layers
        self._saved = self._read()
        self._outer: list[tuple] = []

    def _read(self) -> list[tuple]:
        return [(layer._active_adapter, layer._disable_adapters) for layer in self._layers]

    def _write(self, state: list[tuple]) -> None:
        for layer, (active, disabled) in zip(self._layers, state):
            layer._active_adapter, layer._disable_adapters = active, disabled

    def __enter__(self) -> None:
        self._outer = self._read()
        self._write(self._saved)

    def __exit__(self, *exc) -> None:
        self._write(self._outer)


def _recall_at(topk: torch.Tensor, positives: Sequence[Sequence[int]]) -> dict[str, float]:
    """Batch Recall@k for the questions with gold indices (k = 1 and the full top-k)."""
    rows = [(set(p), t) for p, t in zip(positives, topk.tolist()) if p]
    if not rows:
        return {}
    ks = sorted({1, topk.shape[1]})
    return {f"recall@{k}": sum(len(p & set(t[:k])) / len(p) for p, t in rows) / len(rows) for k in ks}
