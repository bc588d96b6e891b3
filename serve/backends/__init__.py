"""Generator backends behind one interface: `hf` (transformers + generator adapter) and `vllm`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Protocol

if TYPE_CHECKING:
    from serve.retrieved import Retrieved
    from serve.settings import ServeSettings


class GeneratorBackend(Protocol):
    def generate(self, questions: list[str], retrieved: list["Retrieved"], max_new_tokens: int) -> list[str]:
        """Greedy answers, one per question, reading that question's retrieved documents."""

    def generate_ids(self, questions: list[str], retrieved: list["Retrieved"], max_new_tokens: int) -> list[list[int]]:
        """The generated token ids of each answer (what `generate` decodes)."""

    def stream(self, question: str, retrieved: "Retrieved", max_new_tokens: int) -> Iterator[str | list[int]]:
        """The answer to one question as text pieces, yielded as they are decoded, then (last
        item) its generated token ids, which give the usage and the finish reason."""

    def close(self) -> None:
        """Release processes/threads the backend owns."""


def make_backend(settings: "ServeSettings", model) -> GeneratorBackend:
    if settings.backend == "hf":
        from serve.backends.hf import HFBackend

        return HFBackend(model, settings.reader)
    from serve.backends.vllm import VllmBackend

    return VllmBackend(model, settings)
