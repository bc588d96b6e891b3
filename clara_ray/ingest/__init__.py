"""Ray Data document pipeline: raw documents -> the three training stages' JSONL files.

Stages (each a Ray Data map, results cached as Parquet parts keyed by content hash):
extract (docling) -> caption (vision API) -> chunk -> synthesize (text API) -> negatives + outputs.
Entry point: `python -m pipelines.ingest --input DIR --out DIR`; library: `run_ingest(config)`.
"""
from clara_ray.ingest.config import IngestConfig

__all__ = ["IngestConfig", "run_ingest"]


def run_ingest(config: IngestConfig):
    """Run the pipeline (lazy import keeps `import clara_ray.ingest` free of Ray/docling)."""
    from clara_ray.ingest.pipeline import run_ingest as _run

    return _run(config)
