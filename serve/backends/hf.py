"""The transformers backend: CLaRa's own generation API with the generator adapter."""
from __future__ import annotations

import threading
from typing import Iterator

import torch

from serve.retrieved import Retrieved


class HFBackend:
    def __init__(self, model, reader: str):
        self.model = model
        self.reader = reader

    def _compressed(self, retrieved: list[Retrieved]) -> list[torch.Tensor]:
        dtype = self.model.embeddings.new_rows.dtype
        return [torch.from_numpy(r.vectors).to(self.model.device, dtype) for r in retrieved]

    def generate(self, questions: list[str], retrieved: list[Retrieved], max_new_tokens: int) -> list[str]:
        if self.reader == "text":
            return self.model.generate_from_text(questions, [r.texts for r in retrieved], max_new_tokens)
        return self.model.generate_from_compressed_documents_and_questions(
            questions, self._compressed(retrieved), max_new_tokens)

    def _decode_compressed(self, questions: list[str], retrieved: list[Retrieved], max_new_tokens: int,
                           streamer=None) -> torch.Tensor:
        """Greedy new-token ids (B, T) from the generator adapter over the scattered prompt."""
        model = self.model
        with torch.no_grad():
            embeds, mask = model.generator_inputs(questions, self._compressed(retrieved))
            with model.adapter("generator"):
                return model.language_model.generate(
                    inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.tokenizer.eos_token_id,
                    streamer=streamer)

    def generate_ids(self, questions: list[str], retrieved: list[Retrieved], max_new_tokens: int) -> list[list[int]]:
        """Token ids up to and excluding the first end-of-sequence (what vLLM reports too)."""
        eos = self.model.tokenizer.eos_token_id
        rows = self._decode_compressed(questions, retrieved, max_new_tokens).tolist()
        return [row[: row.index(eos) + 1] if eos in row else row for row in rows]

    def stream(self, question: str, retrieved: Retrieved, max_new_tokens: int) -> Iterator[str]:
        if self.reader == "text":  # the baseline only needs whole answers
            yield self.generate([question], [retrieved], max_new_tokens)[0]
            return
        from transformers import TextIteratorStreamer

        # skip_prompt drops the (empty) prompt that generate() echoes for inputs_embeds.
        streamer = TextIteratorStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=600)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._decode_compressed([question], [retrieved], max_new_tokens, streamer)
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

    def close(self) -> None:
        pass
