"""Captioning: each extracted image described by an OpenAI-compatible vision model."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from clara_ray.ingest.config import ApiConfig, CaptionConfig
from clara_ray.ingest.extract import MARKER_RE
from clara_ray.ingest.failures import guarded_row, read_item
from clara_ray.ingest.openai_client import ChatClient
from clara_ray.ingest.storage import to_columns


def caption_messages(jpeg: bytes, prompt: str) -> list[dict]:
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return [{"role": "user", "content": [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]


def caption_image(client: ChatClient, jpeg: bytes, cfg: CaptionConfig) -> str:
    text = client.complete(caption_messages(jpeg, cfg.prompt), max_tokens=cfg.max_tokens)
    return " ".join(text.split())


def caption_text(caption: str) -> str:
    """How a picture's caption reads in the text ("" for a picture without one)."""
    return f"[Image: {caption}]" if caption else ""


def insert_captions(text: str, captions: dict[str, str]) -> str:
    """Put each caption at its marker; images without a caption leave no trace in the text."""
    return MARKER_RE.sub(lambda match: caption_text(captions.get(match.group(1), "")), text).strip()


class Captioner:
    """Ray Data actor holding one API client."""

    def __init__(self, api: dict, cfg: dict, out_dir: str):
        self.api = ApiConfig.model_validate(api)
        self.cfg = CaptionConfig.model_validate(cfg)
        self.client = ChatClient(self.api, self.api.vision_model, self.cfg.workers)
        self.out_dir = Path(out_dir)

    @staticmethod
    def empty_row(key: str) -> dict[str, Any]:
        return {"key": key, "status": "ok", "caption": "", "error_kind": "", "error": ""}

    def _one(self, key: str, path: str) -> dict[str, Any]:
        return guarded_row(self.empty_row(key), lambda: {
            "caption": caption_image(self.client, read_item(self.out_dir / path), self.cfg)})

    def __call__(self, batch: dict) -> dict:
        rows = [self._one(k, p) for k, p in zip(batch["key"], batch["path"])]
        return to_columns(rows)
