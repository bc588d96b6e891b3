"""A store version's manifest: which checkpoint made the vectors, their shape, shards and checksums.

The manifest is the contract between the writer and every reader: a reader trusts nothing it
does not list, and refuses a store whose checkpoint is not the one it was told to expect.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from clara_ray.atomic import write_atomic
from clara_ray.config import validation_problems
from clara_ray.store.errors import StoreError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class CheckpointIdentity(BaseModel):
    """What made the vectors: two stores are comparable only if these agree."""

    fingerprint: str  # sha256 over the checkpoint's files (config + adapters)
    backbone: str
    compression_rate: int
    num_memory_tokens: int
    hidden_size: int
    path: str = ""  # informational only: a checkpoint may move without changing identity

    def same_model(self, other: "CheckpointIdentity") -> bool:
        return self.model_dump(exclude={"path"}) == other.model_dump(exclude={"path"})


class ShardEntry(BaseModel):
    name: str
    num_docs: int
    vectors_sha256: str
    metadata_sha256: str


class IndexEntry(BaseModel):
    kind: str
    file: str
    sha256: str
    params: dict


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    version: int
    created: str
    checkpoint: CheckpointIdentity
    num_docs: int
    shards: list[ShardEntry]
    index: IndexEntry

    @property
    def dim(self) -> int:
        return self.checkpoint.num_memory_tokens * self.checkpoint.hidden_size


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def checkpoint_fingerprint(checkpoint_dir: str | Path) -> str:
    """Hash of every file in a saved CLaRa directory (its config JSON and adapter weights).

    The backbone is referenced by name, not saved, so it is identified by `backbone` instead.
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise StoreError(f"checkpoint {root} is not a directory")
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise StoreError(f"checkpoint {root} is empty")
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def checkpoint_identity(checkpoint_dir: str | Path, model) -> CheckpointIdentity:
    """Identity of a loaded CLaRa (`model`) saved at `checkpoint_dir`."""
    return CheckpointIdentity(
        fingerprint=checkpoint_fingerprint(checkpoint_dir),
        backbone=model.config.backbone,
        compression_rate=model.config.compression_rate,
        num_memory_tokens=model.num_memory_tokens,
        hidden_size=model.hidden_size,
        path=str(Path(checkpoint_dir).resolve()),
    )


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON next to `path` and rename it into place: readers see old or new, never half."""
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    write_json_atomic(version_dir / MANIFEST_NAME, manifest.model_dump())


def read_manifest(version_dir: Path) -> Manifest:
    path = version_dir / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_bytes())  # bytes: pydantic names bad UTF-8 too
    except FileNotFoundError:
        raise StoreError(f"{path}: manifest missing") from None
    except OSError as exc:
        raise StoreError(f"{path}: unreadable manifest ({exc.strerror})") from None
    except ValidationError as exc:
        raise StoreError(f"{path}: invalid manifest: {validation_problems(exc, limit=3)}") from None


def check_checkpoint(manifest: Manifest, expected: CheckpointIdentity | str | Path | None, where: Path) -> None:
    """Refuse a store whose vectors came from another checkpoint than the caller's."""
    if expected is None:
        return
    if isinstance(expected, Path) or (isinstance(expected, str) and Path(expected).is_dir()):
        expected = checkpoint_fingerprint(expected)  # a checkpoint directory
    if isinstance(expected, str):
        if expected != manifest.checkpoint.fingerprint:
            raise StoreError(
                f"{where}: store was built with checkpoint fingerprint {manifest.checkpoint.fingerprint[:12]}"
                f" ({manifest.checkpoint.path}), expected {expected[:12]}; re-run precompress with this checkpoint"
            )
        return
    if not manifest.checkpoint.same_model(expected):
        raise StoreError(
            f"{where}: store was built with checkpoint {manifest.checkpoint.path or '?'}"
            f" ({manifest.checkpoint.model_dump(exclude={'path'})}), not {expected.path or '?'}"
            f" ({expected.model_dump(exclude={'path'})}); re-run precompress with this checkpoint"
        )
