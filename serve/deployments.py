"""The two model deployments: Retriever (query reasoner + store) and Generator (backend).

Both batch concurrent requests with `@serve.batch`; the batch size comes from the settings
(`batch.max_batch_size: 1` turns batching off, which the load benchmark compares against).
Batches that queue up while the model is busy are merged into its next call (serve/coalesce.py);
model calls run in a worker thread so the replica keeps accepting (and batching) requests.
A merged call that fails is retried request by request, so each request gets its own outcome:
`ModelInputError` when its input is at fault (the ingress answers 422), the original error else.
"""
from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, AsyncIterator

import numpy as np
from ray import serve

from clara_ray.threads import apply_torch_threads
from serve import usage
from serve.coalesce import BatchCoalescer
from serve.loading import load_model, open_store
from serve.metrics import metrics
from serve.retrieved import Retrieved
from serve.store_watch import StoreWatcher
from serve.usage import Answer
from serve.settings import ServeSettings


# Every formed batch may wait in the coalescer (which bounds the model call), hence as many
# concurrent batches as a full model call has items, and room for that many requests.
MAX_BATCH, MAX_ONGOING = 16, 256


# What a request's own model call raises when its input is at fault: tokenizers raise TypeError
# for text they cannot encode, the model and vLLM ValueError for a prompt they cannot build or
# fit. Anything else (memory, a dead vLLM worker) is the server's fault and stays a 5xx.
INPUT_FAULTS = (ValueError, TypeError)


class ModelInputError(ValueError):
    """The model could not process this request's input; the other requests were served."""


def request_error(exc: Exception) -> Exception:
    """The error to raise for a request whose own model call raised `exc`."""
    if isinstance(exc, INPUT_FAULTS) and not isinstance(exc, ModelInputError):
        error = ModelInputError(f"the model could not read this input ({type(exc).__name__}: {exc})")
        error.__cause__ = exc
        return error
    return exc


def outcome(result: Any) -> Any:
    """A request's result from its batch's outcomes (serve/coalesce.py), or its own error."""
    if isinstance(result, Exception):
        raise request_error(result)
    return result


def _batched_calls(handler, call, settings: ServeSettings) -> BatchCoalescer:
    handler.set_max_batch_size(settings.batch.max_batch_size)
    handler.set_batch_wait_timeout_s(settings.batch.batch_wait_timeout_s)
    return BatchCoalescer(call, max_items=settings.batch.max_batch_size, observe=metrics().model_call)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=MAX_ONGOING)
class Retriever:
    def __init__(self, settings: ServeSettings):
        from clara_ray.store import checkpoint_fingerprint

        self.model = load_model(settings, adapter="query_reasoner")
        opener = partial(open_store, settings, checkpoint_fingerprint(settings.checkpoint))
        self.stores = StoreWatcher(settings.store, opener, settings.store_watch_s, on_swap=metrics().store)
        self.calls = _batched_calls(self._search_batch, self._search, settings)

    def _search(self, requests: list[tuple[str, int]]) -> list[Retrieved]:
        import torch

        apply_torch_threads()  # model calls run in a worker thread (see clara_ray/threads.py)
        with torch.no_grad():
            queries = self.model.retrieval_vectors(self.model.encode_queries([q for q, _ in requests]))
        store = self.stores.store  # this call's version, whatever a swap does meanwhile
        hits = store.search(queries.cpu().numpy().astype(np.float32), max(k for _, k in requests))
        ids, scores, vectors = hits.ids, hits.scores, hits.vectors
        out = []
        for i, (_, k) in enumerate(requests):
            keep = [j for j in range(min(k, ids.shape[1])) if ids[i, j] is not None]  # None: store < k docs
            out.append(Retrieved(
                ids=[str(ids[i, j]) for j in keep], scores=[float(scores[i, j]) for j in keep],
                texts=[hits.texts[i][j] for j in keep], sources=[hits.sources[i][j] for j in keep],
                vectors=np.ascontiguousarray(vectors[i, keep], dtype=np.float16),
                store_version=store.manifest.version))
        return out

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.0, max_concurrent_batches=MAX_BATCH)
    async def _search_batch(self, requests: list[tuple[str, int]]) -> list[Retrieved | Exception]:
        return await self.calls(requests)

    async def search(self, request: tuple[str, int]) -> Retrieved:
        return outcome(await self._search_batch(request))

    async def reload(self) -> dict:
        """Check for a newly published store version now (POST /v1/admin/reload broadcasts it)."""
        return (await asyncio.to_thread(self.stores.check)).as_dict()

    def __del__(self):
        stores = getattr(self, "stores", None)
        if stores is not None:
            stores.stop()


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=MAX_ONGOING)
class Generator:
    def __init__(self, settings: ServeSettings):
        from serve.backends import make_backend

        self.model = load_model(settings, adapter="generator")
        self.reader = settings.reader
        self.control = sorted(self.model.tokenizer.all_special_tokens)
        self.backend = make_backend(settings, self.model)
        self.calls = _batched_calls(self._generate_batch, self._generate, settings)

    def control_tokens(self) -> list[str]:
        """The tokenizer's reserved strings, which the ingress refuses in request text."""
        return self.control

    def _generate(self, requests: list[tuple[str, Retrieved, int]]) -> list[Answer]:
        apply_torch_threads()  # model calls run in a worker thread (see clara_ray/threads.py)
        answers: list[Answer | None] = [None] * len(requests)
        # One generate call per max_new_tokens value, so nobody decodes longer than asked.
        for budget in sorted({r[2] for r in requests}):
            rows = [i for i, r in enumerate(requests) if r[2] == budget]
            ids = self.backend.generate_ids([requests[i][0] for i in rows], [requests[i][1] for i in rows], budget)
            for i, row, text in zip(rows, ids, self.model.decode_answers(ids)):
                answers[i] = self._answer(requests[i][0], requests[i][1], row, text, budget)
        return answers

    def _answer(self, question: str, retrieved: Retrieved, ids: list[int], text: str, budget: int) -> Answer:
        return usage.answer(self.model, self.reader, question, retrieved, ids, text, budget)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.0, max_concurrent_batches=MAX_BATCH)
    async def _generate_batch(self, requests: list[tuple[str, Retrieved, int]]) -> list[Answer | Exception]:
        return await self.calls(requests)

    async def generate(self, request: tuple[str, Retrieved, int]) -> Answer:
        return outcome(await self._generate_batch(request))

    async def stream(self, question: str, retrieved: Retrieved, max_new_tokens: int) -> AsyncIterator[str | Answer]:
        """Text pieces as they are decoded, then the whole `Answer` (its usage and finish reason)."""
        # One model call at a time: a stream and the batches share the cores. A stream is never
        # batched, so its errors are its own already; they are classified as a batch's are.
        async with self.calls.lock:
            pieces, text = self.backend.stream(question, retrieved, max_new_tokens), []
            try:
                while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                    if isinstance(piece, str):
                        text.append(piece)
                        yield piece
                    else:  # the backend's last item: the generated ids
                        yield self._answer(question, retrieved, piece, "".join(text), max_new_tokens)
            except Exception as exc:
                raise request_error(exc)

    def __del__(self):
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()
