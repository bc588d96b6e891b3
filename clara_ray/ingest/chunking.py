"""Chunking on sentence boundaries to about `target_chars` characters."""
from __future__ import annotations

import re

from clara_ray.ingest.config import ChunkConfig

# A sentence ends at . ! ? (optionally closed by quotes/brackets) before whitespace, or at a
# blank line (headings, list items and table rows of the Markdown export end there too).
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)|\n\s*\n")


def split_sentences(text: str) -> list[str]:
    """Sentences with their closing punctuation, quotes and brackets kept."""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def _hard_split(sentence: str, max_chars: int) -> list[str]:
    """A 'sentence' longer than max_chars (tables, code) is cut at whitespace."""
    pieces, current = [], ""
    for word in sentence.split():
        if current and len(current) + 1 + len(word) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return pieces + ([current] if current else [])


def chunk_text(text: str, cfg: ChunkConfig) -> list[str]:
    """Greedy packing of whole sentences; a short tail joins the previous chunk if it fits."""
    chunks, current = [], ""
    for sentence in split_sentences(text):
        for piece in _hard_split(sentence, cfg.max_chars) if len(sentence) > cfg.max_chars else [sentence]:
            if current and len(current) + 1 + len(piece) > cfg.target_chars:
                chunks.append(current)
                current = piece
            else:
                current = f"{current} {piece}" if current else piece
    if current:
        if chunks and len(current) < cfg.min_chars and len(chunks[-1]) + 1 + len(current) <= cfg.max_chars:
            chunks[-1] = f"{chunks[-1]} {current}"
        else:
            chunks.append(current)
    return chunks
