"""Extraction: one input file -> text with image markers, its images saved as JPEG files.

Documents go through docling's Python API (PDF, DOCX, PPTX, HTML, Markdown). Standalone images
(detected by content, not by file name) skip docling, whose image route needs the layout/OCR
models: the image itself is the document and its caption becomes the text.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from clara_ray.atomic import write_atomic
from clara_ray.ingest.config import ExtractConfig
from clara_ray.ingest.failures import ItemError, guarded_row, read_item
from clara_ray.ingest.images import ImageError, guard_image_opens, normalise_image, sniff_image, take_refusals
from clara_ray.ingest.storage import to_columns

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
INPUT_SUFFIXES = {".pdf", ".docx", ".pptx", ".html", ".htm", ".md", ".markdown"} | IMAGE_SUFFIXES
_PLACEHOLDER = "\x00CLARA_IMAGE\x00"
MARKER_RE = re.compile(r"<<image:([0-9a-f]{16}-\d{3})>>")


def image_marker(image_id: str) -> str:
    return f"<<image:{image_id}>>"


def picture_id(key: str, number: int) -> str:
    """The id of a file's `number`-th picture (reading order): its image file and caption are keyed by it."""
    return f"{key[:16]}-{number:03d}"


def document_pictures(doc) -> list:
    """A DoclingDocument's pictures in reading order (the order picture_id numbers them)."""
    from docling_core.types.doc import PictureItem

    return [item for item, _ in doc.iterate_items() if isinstance(item, PictureItem)]


def document_json(doc) -> str:
    """The DoclingDocument without picture or page bitmaps (saved as files already): what the
    chunker reads later, when captions exist, to cut it along its sections and tables."""
    for picture in document_pictures(doc):
        picture.image = None
    for page in doc.pages.values():
        page.image = None
    return doc.model_dump_json(exclude_none=True)


def build_converter(cfg: ExtractConfig):
    """A docling converter for the document formats; PDF pipeline chosen by artifact availability.

    Also bounds every image decode of this process (docling decodes embedded pictures itself).
    """
    from docling.datamodel.backend_options import HTMLBackendOptions, MarkdownBackendOptions, PdfBackendOptions
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import (DocumentConverter, HTMLFormatOption, MarkdownFormatOption,
                                            NativePdfFormatOption, PdfFormatOption)

    guard_image_opens(cfg.max_image_side, cfg.max_image_pixels)
    if cfg.pdf_artifacts_path:
        from docling.datamodel.pipeline_options import PdfPipelineOptions

        pdf = PdfFormatOption(pipeline_options=PdfPipelineOptions(
            artifacts_path=cfg.pdf_artifacts_path, generate_picture_images=True, do_ocr=False))
    else:
        from docling.datamodel.pipeline_options import NativePdfPipelineOptions

        pdf = NativePdfFormatOption(
            pipeline_options=NativePdfPipelineOptions(generate_page_images=False, generate_picture_images=True,
                                                      parser_threads=cfg.pdf_parser_threads),
            backend_options=PdfBackendOptions(include_bitmap_images=True))
    return DocumentConverter(
        allowed_formats=[InputFormat.PDF, InputFormat.DOCX, InputFormat.PPTX, InputFormat.HTML, InputFormat.MD],
        format_options={
            InputFormat.PDF: pdf,
            # Local pictures referenced by HTML/Markdown are part of the document.
            InputFormat.HTML: HTMLFormatOption(backend_options=HTMLBackendOptions(
                fetch_images=True, enable_local_fetch=True, max_image_pixels=cfg.max_image_pixels)),
            InputFormat.MD: MarkdownFormatOption(backend_options=MarkdownBackendOptions(
                fetch_images=True, enable_local_fetch=True, max_image_pixels=cfg.max_image_pixels)),
        })


def _save_image(image, image_id: str, out_dir: Path, cfg: ExtractConfig) -> dict[str, Any]:
    norm = normalise_image(image, cfg.max_image_side, cfg.min_image_side, cfg.jpeg_quality, cfg.max_image_pixels)
    doc_part, number = image_id.rsplit("-", 1)
    rel = Path("images") / doc_part / f"{number}.jpg"
    write_atomic(out_dir / rel, norm.jpeg)
    return {"image_id": image_id, "path": str(rel), "width": norm.width, "height": norm.height}


def _convert_document(converter, path: Path, cfg: ExtractConfig):
    from docling.datamodel.base_models import ConversionStatus

    kwargs = {"page_range": (1, cfg.max_pages)} if cfg.max_pages else {}
    try:
        result = converter.convert(path, raises_on_error=False, **kwargs)
    except Exception as exc:  # docling raises for formats it refuses before converting
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        kind = "unsupported_format" if "format" in message.lower() else "conversion_failed"
        raise ItemError(kind, message) from None
    if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
        reasons = "; ".join(e.error_message for e in result.errors) or f"status {result.status.value}"
        raise ItemError("conversion_failed", reasons)
    return result


def _image_error(kind: str, reason: str) -> dict[str, str]:
    return {"kind": kind, "reason": reason}


def _document_text(result, key: str, out_dir: Path, cfg: ExtractConfig):
    """Markdown text with one marker per picture (reading order), pictures saved as files."""
    from docling_core.types.doc import ImageRefMode

    doc = result.document
    pictures = document_pictures(doc)
    text = doc.export_to_markdown(image_mode=ImageRefMode.PLACEHOLDER, image_placeholder=_PLACEHOLDER)
    pieces = text.split(_PLACEHOLDER)
    # Pictures refused while docling decoded them reach us without data (or not at all, as in PPTX):
    # each refusal is reported with its size, the remaining pictures without data generically.
    refused = take_refusals()
    images, without_data, out = [], [], [pieces[0]]
    image_errors = [_image_error("image_too_large", f"embedded picture left out: {reason}") for reason in refused]
    for number, piece in enumerate(pieces[1:]):
        image_id = picture_id(key, number)
        marker = ""
        try:
            pil = pictures[number].get_image(doc) if number < len(pictures) else None
            if pil is None:
                without_data.append(number)
            else:
                images.append(_save_image(pil, image_id, out_dir, cfg))
                marker = image_marker(image_id)
        except ImageError as exc:
            image_errors.append(_image_error(exc.kind, f"picture {number}: {exc}"))
        except (ValueError, OSError) as exc:  # docling's own limits on the picture's data
            image_errors.append(_image_error("corrupt_image", f"picture {number}: {exc}"))
        out.extend([marker, piece])
    take_refusals()  # the ones raised in this loop are reported above
    image_errors += [_image_error("corrupt_image", f"picture {number}: no image data in the document")
                     for number in without_data[len(refused):]]
    return "".join(out).strip(), images, image_errors, len(doc.pages)


def _extract(converter, path: Path, key: str, out_dir: Path, cfg: ExtractConfig) -> dict[str, Any]:
    data = read_item(path)
    if not data.strip():
        raise ItemError("empty_file", "file is empty")
    take_refusals()  # left over from an earlier file
    if sniff_image(data) or path.suffix.lower() in IMAGE_SUFFIXES:
        image_id = picture_id(key, 0)
        images = [_save_image(data, image_id, out_dir, cfg)]
        return {"format": "image", "text": image_marker(image_id), "pages": 1, "images": json.dumps(images)}
    result = _convert_document(converter, path, cfg)
    text, images, image_errors, pages = _document_text(result, key, out_dir, cfg)
    if not text:
        raise ItemError("no_text", "no text or pictures found in the document")
    return {"format": result.input.format.value, "text": text, "pages": pages, "images": json.dumps(images),
            "image_errors": json.dumps(image_errors), "document": document_json(result.document)}


def extract_file(converter, path: Path, key: str, out_dir: Path, cfg: ExtractConfig) -> dict[str, Any]:
    """Extract one file into a row; any failure becomes a row with status 'error', its kind and reason."""
    row = {**Extractor.empty_row(key), "format": path.suffix.lower().lstrip(".")}
    return guarded_row(row, lambda: _extract(converter, path, key, out_dir, cfg))


class Extractor:
    """Ray Data actor: holds one docling converter (built once; docling import takes seconds)."""

    def __init__(self, cfg: dict, out_dir: str):
        self.cfg = ExtractConfig.model_validate(cfg)
        self.out_dir = Path(out_dir)
        self.converter = build_converter(self.cfg)

    @staticmethod
    def empty_row(key: str) -> dict[str, Any]:
        """A row's fields before extraction (also the base of a failed row)."""
        # document: the DoclingDocument as JSON ("" for standalone images, which have no structure)
        return {"key": key, "format": "", "status": "ok", "error_kind": "", "error": "", "pages": 0, "text": "",
                "images": "[]", "image_errors": "[]", "document": ""}

    def __call__(self, batch: dict) -> dict:
        rows = [extract_file(self.converter, Path(path), key, self.out_dir, self.cfg)
                for path, key in zip(batch["path"], batch["key"])]
        return to_columns(rows)
