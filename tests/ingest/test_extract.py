"""Real docling on generated documents (no Ray here; the pipeline tests cover the Ray stage)."""
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from clara_ray.ingest.config import ExtractConfig
from clara_ray.ingest.extract import MARKER_RE, build_converter, extract_file
from clara_ray.ingest.hashing import content_key
from clara_ray.ingest.inputs import discover
from ingest_helpers import DISCOVER_KINDS, LIBTASN1_PDF, PDF_REASON, make_documents, pixel_bomb_png, swap_media


CFG = ExtractConfig(max_pages=2)


@pytest.fixture(scope="module")
def converter():
    return build_converter(CFG)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, converter):
    root = tmp_path_factory.mktemp("extract")
    expected = make_documents(root / "docs")
    files, skipped = discover(root / "docs")
    rows = {f["source"]: extract_file(converter, Path(f["path"]), f["key"], root / "out", CFG) for f in files}
    return root / "out", expected, rows, {e["source"]: e for e in skipped}


def _images(row):
    return json.loads(row["images"])


def test_every_file_is_extracted_or_fails_with_its_reason(extracted):
    _, expected, rows, skipped = extracted
    assert set(rows) | set(skipped) == set(expected)
    for name, outcome in expected.items():
        if outcome in DISCOVER_KINDS:  # never reaches extraction, reported all the same
            assert (skipped[name]["stage"], skipped[name]["kind"]) == ("discover", outcome), skipped[name]
            assert skipped[name]["reason"], name
            continue
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
    out, _, rows, _ = extracted
    row = rows[name]
    images = _images(row)
    assert len(images) == 1 and json.loads(row["image_errors"]) == []
    marker = f"<<image:{images[0]['image_id']}>>"
    text = row["text"]
    assert text.index(before) < text.index(marker) < text.index(after)
    saved = Image.open(out / images[0]["path"])
    assert saved.format == "JPEG" and saved.size == (images[0]["width"], images[0]["height"]) == (320, 200)


def test_standalone_images_by_content_and_downscaled(extracted):
    out, _, rows, _ = extracted
    for name in ("red-figure.png", "large-photo.jpg", "picture.docx"):
        row = rows[name]
        assert row["format"] == "image" and MARKER_RE.fullmatch(row["text"]), name
    large = _images(rows["large-photo.jpg"])[0]
    assert (large["width"], large["height"]) == (2048, 683)
    assert Image.open(out / large["path"]).size == (2048, 683)


def test_scan_over_the_pixel_limit_in_a_docx_is_downscaled(extracted):
    """A 13400 x 13400 JPEG (2.2x Pillow's limit, which used to fail the whole document)."""
    out, _, rows, _ = extracted
    row = rows["scan-bomb.docx"]
    images = _images(row)
    assert json.loads(row["image_errors"]) == [] and "soundings" in row["text"]
    assert len(images) == 1 and Image.open(out / images[0]["path"]).size == (2048, 2048)


@pytest.fixture(scope="module")
def bomb_containers(tmp_path_factory) -> Path:
    """One DOCX, PPTX, HTML and Markdown file each holding a 20000 x 20000 PNG."""
    import docx
    import pptx

    folder = tmp_path_factory.mktemp("bombs")
    bomb = folder / "map.png"
    bomb.write_bytes(pixel_bomb_png())
    doc = docx.Document()
    doc.add_paragraph(HARBOUR)
    doc.add_picture(str(bomb))  # python-docx reads the header only
    doc.save(folder / "map.docx")
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = HARBOUR
    Image.new("RGB", (64, 64), "red").save(folder / "small.png")
    slide.shapes.add_picture(str(folder / "small.png"), 0, 0)
    deck.save(folder / "map.pptx")
    swap_media(folder / "map.pptx", bomb.read_bytes())  # python-pptx would decode it
    (folder / "map.html").write_text(f"<html><body><p>{HARBOUR}</p><img src='map.png'></body></html>")
    (folder / "map.md").write_text(f"# Harbour\n\n{HARBOUR}\n\n![map](map.png)\n")
    return folder


HARBOUR = "The harbour map shows the soundings of the east pier."


@pytest.mark.parametrize("name", ["map.docx", "map.pptx", "map.html", "map.md"])
def test_embedded_picture_over_the_limit_is_reported_and_the_text_kept(bomb_containers, converter, name, tmp_path):
    path = bomb_containers / name
    row = extract_file(converter, path, content_key(path.read_bytes()), tmp_path, CFG)
    assert row["status"] == "ok" and "soundings of the east pier" in row["text"], row
    assert _images(row) == [] and "<<image:" not in row["text"]
    errors = json.loads(row["image_errors"])
    assert [e["kind"] for e in errors] == ["image_too_large"], errors
    assert "20000x20000 px (400,000,000 pixels)" in errors[0]["reason"]


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
