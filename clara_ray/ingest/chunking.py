"""Chunks that fit the model: at most `chunk.max_tokens` tokens of the model's tokenizer.

The compressor reads the first `doc_max_length` tokens of a document and drops the rest, so a
longer chunk would be cited for text the model never read; `chunk.max_tokens` is that window.
A document docling converted is cut on its DoclingDocument by docling's HybridChunker: chunks
follow the sections and carry their headings (as leading lines, counted in the budget), tables
stay whole where they fit and are split by rows, header repeated, where they do not. Text with
no document structure (a standalone image's caption; extractions cached by older versions) is
split by semchunk, the splitter HybridChunker itself uses, on the same token count.
"""
from __future__ import annotations

from typing import Any

from clara_ray.ingest.captions import caption_text
from clara_ray.ingest.config import ChunkConfig
from clara_ray.ingest.extract import document_pictures, picture_id


def _picture_serializer(captions: dict[str, str]):
    """Serializes a picture as its caption from the vision model, then the document's own caption."""
    from docling_core.transforms.serializer.base import BasePictureSerializer
    from docling_core.transforms.serializer.common import create_ser_result

    class CaptionedPictures(BasePictureSerializer):
        def serialize(self, *, item, doc_serializer, doc, **kwargs):
            own = doc_serializer.serialize_captions(item=item, **kwargs).text
            parts = [caption_text(captions.get(item.self_ref, "")), own]
            return create_ser_result(text="\n".join(p for p in parts if p), span_source=item)

    return CaptionedPictures()


def _serializer_provider(captions: dict[str, str]):
    from docling_core.transforms.chunker.hierarchical_chunker import ChunkingDocSerializer, ChunkingSerializerProvider
    from docling_core.transforms.serializer.markdown import MarkdownTableSerializer

    pictures = _picture_serializer(captions)

    class CaptionedProvider(ChunkingSerializerProvider):
        def get_serializer(self, doc):
            # Markdown tables: HybridChunker splits those by rows and repeats the header row in
            # each piece (its default "row, column = value" triplets are cut mid-row instead).
            return ChunkingDocSerializer(doc=doc, picture_serializer=pictures,
                                         table_serializer=MarkdownTableSerializer())

    return CaptionedProvider()


class TokenChunker:
    """Built once per run on the driver (loading the tokenizer takes a second)."""

    def __init__(self, cfg: ChunkConfig):
        import semchunk
        from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer
        from transformers import AutoTokenizer

        from clara_ray.backbones import resolve_backbone

        self.tokenizer = HuggingFaceTokenizer(tokenizer=AutoTokenizer.from_pretrained(resolve_backbone(cfg.tokenizer)),
                                              max_tokens=cfg.max_tokens)
        # Tokens as the compressor counts them: the text's own, without special tokens.
        self.count_tokens = self.tokenizer.count_tokens
        self._split_text = semchunk.chunkerify(self.count_tokens, cfg.max_tokens)

    def chunk_document(self, document: str, key: str, captions: dict[str, str]) -> list[str]:
        """Chunks of a DoclingDocument (JSON, as extraction stores it); `captions` by picture id."""
        from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
        from docling_core.types.doc import DoclingDocument

        doc = DoclingDocument.model_validate_json(document)
        by_ref = {picture.self_ref: captions[picture_id(key, number)]
                  for number, picture in enumerate(document_pictures(doc)) if picture_id(key, number) in captions}
        chunker = HybridChunker(tokenizer=self.tokenizer, serializer_provider=_serializer_provider(by_ref))
        return _nonempty(chunker.contextualize(chunk) for chunk in chunker.chunk(doc))

    def chunk_text(self, text: str) -> list[str]:
        """Chunks of plain text, split at the largest boundaries that fit (paragraphs, sentences, words)."""
        return _nonempty(self._split_text(text))


def _nonempty(texts) -> list[str]:
    return [text.strip() for text in texts if text.strip()]


def chunk_documents(docs: list[dict[str, Any]], captions: dict[str, str], cfg: ChunkConfig) -> dict[str, list[str]]:
    """doc key -> its chunks. docs: rows with key, text (captions already in) and document (JSON or "")."""
    if not docs:
        return {}
    chunker = TokenChunker(cfg)
    out = {}
    for doc in docs:
        structured = chunker.chunk_document(doc["document"], doc["key"], captions) if doc.get("document") else []
        # A document whose items all serialize empty (only headings, say) still has its text.
        out[doc["key"]] = structured or chunker.chunk_text(doc["text"])
    return out
