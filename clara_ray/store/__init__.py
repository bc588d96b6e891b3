"""Compressed document store: fp16 shards + Parquet metadata + FAISS index + manifest.

See docs/ARCHITECTURE.md ("Store API") and README ("Precompress a corpus").
"""
from clara_ray.store.builder import StoreWriter
from clara_ray.store.errors import StoreError
from clara_ray.store.index import IndexConfig, VectorIndex, normalize
from clara_ray.store.manifest import CheckpointIdentity, checkpoint_fingerprint, checkpoint_identity
from clara_ray.store.shards import DocRecord
from clara_ray.store.store import CompressedStore, SearchHits

__all__ = [
    "CheckpointIdentity", "CompressedStore", "DocRecord", "IndexConfig", "SearchHits", "StoreError",
    "StoreWriter", "VectorIndex", "checkpoint_fingerprint", "checkpoint_identity", "normalize",
]
