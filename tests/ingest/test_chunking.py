"""Token chunks on a real DoclingDocument (built with docling-core's API) and the SmolLM2 tokenizer."""
import re

import pytest

from clara_ray.ingest.chunking import TokenChunker, chunk_documents
from clara_ray.ingest.config import ChunkConfig
from clara_ray.ingest.extract import picture_id

WINDOW = 40
KEY = "f" * 64
NILE = " ".join(f"The Nile flooded its valley in year {i}, leaving black silt on field {i * 3}." for i in range(12))
RIVERS = [("Nile", "6650"), ("Amazon", "6400"), ("Yangtze", "6300"), ("Mississippi", "3730"), ("Yenisei", "3487"),
          ("Yellow River", "5464")]


@pytest.fixture(scope="module")
def chunker():
    return TokenChunker(ChunkConfig(tokenizer="tiny-random", max_tokens=WINDOW))  # SmolLM2's tokenizer


def _document() -> str:
    from docling_core.types.doc import DocItemLabel, DoclingDocument, TableCell, TableData

    doc = DoclingDocument(name="rivers")
    doc.add_title("Rivers")
    doc.add_heading("The Nile", level=1)
    doc.add_text(label=DocItemLabel.PARAGRAPH, text=NILE)
    doc.add_picture()
    doc.add_heading("Lengths", level=1)
    rows = [("River", "Length km"), *RIVERS]
    cells = [TableCell(text=text, start_row_offset_idx=r, end_row_offset_idx=r + 1, start_col_offset_idx=c,
                       end_col_offset_idx=c + 1, column_header=r == 0)
             for r, row in enumerate(rows) for c, text in enumerate(row)]
    doc.add_table(data=TableData(num_rows=len(rows), num_cols=2, table_cells=cells))
    return doc.model_dump_json()


def _words(text: str) -> list[str]:
    return text.split()


def test_document_chunks_fit_the_window_and_keep_headings_captions_and_table_rows(chunker):
    captions = {picture_id(KEY, 0): "A map of the Nile delta."}
    chunks = chunker.chunk_document(_document(), KEY, captions)

    assert all(chunker.count_tokens(c) <= WINDOW for c in chunks), [chunker.count_tokens(c) for c in chunks]
    nile = [c for c in chunks if c.startswith("Rivers\nThe Nile\n")]
    assert len(nile) >= 3  # the long paragraph is split, every piece under its headings
    body = [w for c in nile for w in _words(c.split("\n", 2)[2])]
    assert " ".join(body).startswith(NILE)  # nothing of the paragraph lost or reordered
    assert sum("[Image: A map of the Nile delta.]" in c for c in nile) == 1
    lengths = [c for c in chunks if c.startswith("Rivers\nLengths\n")]
    assert len(lengths) > 1 and all("| River " in c for c in lengths)  # split by rows, header repeated
    for river, km in RIVERS:  # each row whole, once
        assert sum(re.search(rf"\| {river} +\| +{km} \|", c) is not None for c in lengths) == 1, river


def test_a_picture_without_caption_leaves_no_trace(chunker):
    chunks = chunker.chunk_document(_document(), KEY, {})
    assert not any("[Image" in c for c in chunks)


def test_plain_text_chunks_fit_the_window_and_keep_every_word(chunker):
    chunks = chunker.chunk_text(NILE)
    assert len(chunks) > 3 and all(chunker.count_tokens(c) <= WINDOW for c in chunks)
    assert [w for c in chunks for w in _words(c)] == _words(NILE)
    assert chunker.chunk_text("  \n\n ") == []


def test_documents_without_structure_are_chunked_as_text():
    docs = [{"key": "a", "text": "[Image: A red box on white.]", "document": ""},
            {"key": "b", "text": NILE, "document": _document()}]
    chunked = chunk_documents(docs, {}, ChunkConfig(tokenizer="tiny-random", max_tokens=WINDOW))
    assert chunked["a"] == ["[Image: A red box on white.]"]
    assert chunked["b"][0].startswith("Rivers\nThe Nile\n")
