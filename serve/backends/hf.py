"""The transformers backend: CLaRa's own generation API with the generator adapter."""
from __future__ import annotations

import threading
from typing import Iterator

import torch
from transformers import TextIteratorStreamer

from clara_ray.threads import apply_torch_threads
from serve.retrieved import Retrieved, memory_vectors


class TokenStreamer(TextIteratorStreamer):
    """Text as each token decodes. transformers' streamers hold text back until a word ends,
    which delays the first piece of an answer by a decode step or more; this one holds back only
    a character whose bytes have not all arrived yet. `generated` keeps every token it was given
    (the cache is emptied at the end), for the answer's usage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generated: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.generated.extend(value.reshape(-1).tolist())
        self.token_cache.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if not text.endswith("\ufffd"):
            self.on_finalized_text(text[self.print_len:])
            self.print_len = len(text)


class HFBackend:
    def __init__(self, model, reader: str):
        """model: a CLaRa with its generator merged (serve/loading.py)."""
        self.model = model
        self.reader = reader
        if reader == "compressed":
            # Not for text prompts: after a cached head, a 1,340-token prefill takes SDPA's
            # explicit-mask path, which costs more than the head saves (3.5 s -> 4.4 s measured);
            # a ~90-token compressed prompt gains (0.23 s -> 0.20 s for its first token).
            model.cache_prompt_head()

    def generate(self, questions: list[str], retrieved: list[Retrieved], max_new_tokens: int) -> list[str]:
        return self.model.decode_answers(self.generate_ids(questions, retrieved, max_new_tokens))

    def generate_ids(self, questions: list[str], retrieved: list[Retrieved], max_new_tokens: int) -> list[list[int]]:
        """The generated token ids of each answer, up to and including its first end-of-sequence."""
        model, eos = self.model, self.model.tokenizer.eos_token_id
        if self.reader == "text":
            rows = model.generate_ids_from_text(questions, [r.texts for r in retrieved], max_new_tokens).tolist()
        else:
            vectors = memory_vectors(retrieved, model)
            rows = model.generate_ids_from_compressed(questions, vectors, max_new_tokens).tolist()
        return [row[: row.index(eos) + 1] if eos in row else row for row in rows]

    def stream(self, question: str, retrieved: Retrieved, max_new_tokens: int) -> Iterator[str | list[int]]:
        if self.reader == "text":  # the baseline only needs whole answers
            ids = self.generate_ids([question], [retrieved], max_new_tokens)[0]
            yield self.model.decode_answers([ids])[0]
            yield ids
            return
        # skip_prompt drops the (empty) prompt that generate() echoes for inputs_embeds.
        streamer = TokenStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                apply_torch_threads()  # this thread's own count, else one core (clara_ray/threads.py)
                vectors = memory_vectors([retrieved], self.model)
                self.model.generate_ids_from_compressed([question], vectors, max_new_tokens, streamer)
            except BaseException as exc:  # surfaced to the caller below, not lost in the thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        first = True
        for piece in streamer:
            piece = piece.lstrip() if first else piece  # same stripping as the non-streamed answer
            if piece:
                first = False
                yield piece
        worker.join()
        if failure:
            raise failure[0]
        yield streamer.generated

    def close(self) -> None:
        pass
