"""What an answer cost and why it ended, as OpenAI clients read them (`usage`, `finish_reason`).

Counted from the generated token ids: the answer text is stripped of surrounding whitespace and
special tokens, so re-encoding it would undercount (a cut answer could pass for a finished one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serve.retrieved import Retrieved


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def answer(model, reader: str, question: str, retrieved: Retrieved, ids: list[int], text: str, budget: int) -> Answer:
    """`ids`: the generated tokens (with the end-of-sequence and any padding after it)."""
    eos = model.tokenizer.eos_token_id
    ended = eos in ids
    generated = ids[: ids.index(eos) + 1] if ended else ids
    return Answer(text, prompt_tokens(model, reader, question, retrieved), len(generated),
                  "stop" if ended or len(generated) < budget else "length")


def prompt_tokens(model, reader: str, question: str, retrieved: Retrieved) -> int:
    """Tokens of the generator prompt: the question with each document as a memory slot
    (`compressed`) or as its text (`text`), in the backbone's chat template."""
    return model.prompt_length(question, list(retrieved.texts) if reader == "text" else len(retrieved))
