"""Real docling on generated documents (no Ray here; the pipeline tests cover the Ray stage)."""
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from clara_ray.ingest.config import ExtractConfig
from clara_ray.ingest.extract import MARKER_RE, build_converter, extract_file
from clara_ray.ingest.hashing import content_key
from ingest_helpers import LIBTASN1_PDF, PDF_REASON, make_documents


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    expected = make_documents(root / "docs")
    cfg = ExtractConfig(max_pages=2)
    converter = build_converter(cfg)
    rows = {}
    for name in expected:
        path = root / "docs" / name
        rows[name] = extract_file(converter, path, content_key(path.read_bytes()), root / "out", cfg)
    return root / "out", expected, rows


def _images(row):
    return json.loads(row["images"])


def test_every_file_is_extracted_or_fails_with_its_reason(extracted):
    _, expected, rows = extracted
    for name, outcome in expected.items():
        row = rows[name]
        if outcome in ("ok", "invalid_json"):
            assert row["status"] == "ok", (name, row["error"])
            assert row["text"], name
        else:
            assert (row["status"], row["error_kind"]) == ("error", outcome), (name, row)
            assert row["error"], name


@pytest.mark.parametrize("name, before, after", [
    ("bees.docx", "keep the queen warm", "The picture above shows a hive frame"),
    ("volcanoes.pptx", "Volcanoes", "Magma rises"),
    ("rivers.md", "drop sediment", "The Nile"),
    ("forests.html", "store carbon", "Boreal forests"),
])
def test_pictures_are_saved_and_marked_where_they_were(extracted, name, before, after):
    out, _, rows = extracted
    row = rows[name]
    images = _images(row)
    assert len(images) == 1 and json.loads(row["image_errors"]) == []
    marker = f"<<image:{images[0]['image_id']}>>"
    text = row["text"]
    assert text.index(before) < text.index(marker) < text.index(after)
    saved = Image.open(out / images[0]["path"])
    assert saved.format == "JPEG" and saved.size == (images[0]["width"], images[0]["height"]) == (320, 200)


def test_standalone_images_by_content_and_downscaled(extracted):
    out, _, rows = extracted
    for name in ("red-figure.png", "large-photo.jpg", "picture.docx"):
        row = rows[name]
        assert row["format"] == "image" and MARKER_RE.fullmatch(row["text"]), name
    large = _images(rows["large-photo.jpg"])[0]
    assert (large["width"], large["height"]) == (2048, 683)
    assert Image.open(out / large["path"]).size == (2048, 683)


def test_misnamed_docx_converts_by_content(extracted):
    row = extracted[2]["misnamed.pdf"]
    assert row["format"] == "docx" and "Ganymede is larger than Mercury" in row["text"]


def test_image_only_pdf_yields_its_bitmap(extracted):
    row = extracted[2]["scan.pdf"]
    assert row["format"] == "pdf" and row["pages"] == 1 and len(_images(row)) == 1


def test_debian_pdf_native_pipeline_text_and_page_limit(extracted):
    if not LIBTASN1_PDF.exists():
        pytest.skip(PDF_REASON)
    row = extracted[2]["libtasn1.pdf"]
    assert row["format"] == "pdf" and row["pages"] == 2  # max_pages=2 of 36
    assert "Abstract Syntax Notation One" in row["text"]


def test_layout_pipeline_is_chosen_when_artifacts_are_configured(tmp_path):
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions

    native = build_converter(ExtractConfig()).format_to_options[InputFormat.PDF].pipeline_options
    layout = build_converter(ExtractConfig(pdf_artifacts_path=str(tmp_path))).format_to_options[InputFormat.PDF]
    assert isinstance(native, NativePdfPipelineOptions)
    assert isinstance(layout.pipeline_options, PdfPipelineOptions)
    assert Path(layout.pipeline_options.artifacts_path) == tmp_path
