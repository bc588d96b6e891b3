"""Ingest cuts chunks to the model's window, so precompress truncates none of them; a model with a
smaller window than the chunks gets them truncated, and precompress counts and reports that.
Real docling, real Ray Data, real CLaRa (tiny backbone with SmolLM2's tokenizer)."""
import json
import logging

import pytest

from clara_ray.ingest.config import IngestConfig
from clara_ray.ingest.outputs import RAW
from clara_ray.ingest.pipeline import run_ingest
from clara_ray.store.job import PrecompressConfig, run_precompress

pytestmark = pytest.mark.slow
WINDOW = 32  # tokens: the doc_max_length of tests/conftest.py's tiny_config
FLOODS = " ".join(f"In year {i} the Nile rose in July and left black silt on field {i * 3} of the valley."
                  for i in range(10))


def _checkpoint(path, doc_max_length: int):
    from clara_ray import CLaRa, CLaRaConfig

    config = CLaRaConfig(backbone="tiny-random", compression_rate=8, doc_max_length=doc_max_length, dtype="float32")
    model = CLaRa.from_config(config, device="cpu")
    model.prepare_stage("end_to_end")
    model.save_pretrained(path)
    return path


def _precompress(checkpoint, corpus, out):
    cfg = PrecompressConfig(batch_size=4, shard_size=8, actors=1, progress=False, index={"threads": 1})
    return run_precompress(checkpoint, corpus, out, cfg)


def test_token_chunks_reach_precompress_untruncated_and_a_smaller_window_is_reported(ray_cluster, tmp_path, caplog):
    from transformers import AutoTokenizer

    from clara_ray.backbones import resolve_backbone

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "nile.md").write_text(f"# The Nile\n\n## Floods\n\n{FLOODS}\n\n## Delta\n\nThe delta fans out at Cairo.\n")
    out = tmp_path / "ingest"
    run_ingest(IngestConfig.model_validate(dict(
        input=str(docs), out=str(out), until="caption", progress=False,
        api={"base_url": "http://127.0.0.1:9/v1", "text_model": "unused"},  # no pictures: never called
        extract={"workers": 1}, caption={"workers": 1},
        chunk={"tokenizer": "tiny-random", "max_tokens": WINDOW})))

    chunks = [json.loads(line)["text"] for line in (out / RAW).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("tiny-random"))
    lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert len(tokenizer(FLOODS, add_special_tokens=False)["input_ids"]) > 4 * WINDOW  # the paragraph overflows
    assert max(lengths) <= WINDOW and len(chunks) >= 5, lengths
    assert all(c.startswith("The Nile\nFloods\n") for c in chunks if "silt" in c)  # headings kept with the text

    fits = _precompress(_checkpoint(tmp_path / "fits", WINDOW), out / RAW, tmp_path / "store-fits")
    assert (fits["new_docs"], fits["truncated"], fits["doc_max_length"]) == (len(chunks), 0, WINDOW)

    small = WINDOW // 2
    with caplog.at_level(logging.WARNING, logger="clara_ray.store.job"):
        cut = _precompress(_checkpoint(tmp_path / "small", small), out / RAW, tmp_path / "store-small")
    assert cut["truncated"] == sum(n > small for n in lengths) > 0
    assert f"{cut['truncated']} of {len(chunks)} documents were longer than the model's window" in caplog.text
