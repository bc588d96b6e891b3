"""Extraction throughput: the Ray Data extract stage (1 and 2 workers) vs docling called directly.

    python -m bench.ingest_extraction [--pdf-copies 8] [--out /tmp/clara-bench-ingest]

Corpus: copies of the Debian PDF (libtasn1-doc, 36 pages; each copy made unique by a trailing PDF
comment so content hashing does not fold them) plus the shipped example documents (one DOCX, PPTX,
HTML and Markdown file with pictures; `examples/documents`). Every arm does the same work with the same function (`extract_file`: docling
conversion, pictures saved as JPEG) and includes its docling import and converter set-up; the
Ray arms also pay for actor start-up, scheduling and Parquet checkpoints. Ray start-up itself is
excluded. Target (issue 6): Ray overhead <= 15% over direct docling with 1 worker.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

PDF = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")


def build_corpus(folder: Path, pdf_copies: int) -> None:
    from clara_ray.resources import shipped

    shutil.copytree(shipped("examples/documents"), folder)
    data = PDF.read_bytes()
    for i in range(pdf_copies):
        (folder / f"libtasn1-{i}.pdf").write_bytes(data + f"\n%clara-bench-copy-{i}\n".encode())


def direct_docling(folder: Path, out: Path) -> tuple[float, int]:
    """Plain loop in this process, docling import included (nothing has imported it yet)."""
    start = time.perf_counter()
    from clara_ray.ingest.config import ExtractConfig
    from clara_ray.ingest.extract import build_converter, extract_file
    from clara_ray.ingest.inputs import discover

    cfg = ExtractConfig()
    converter = build_converter(cfg)
    pages = 0
    for item in discover(folder)[0]:  # the files the Ray arms read, in the same order
        row = extract_file(converter, Path(item["path"]), item["key"], out, cfg)
        assert row["status"] == "ok", (item["source"], row["error"])
        pages += row["pages"]
    return time.perf_counter() - start, pages


def ray_stage(folder: Path, out: Path, workers: int) -> tuple[float, int]:
    from clara_ray.ingest.config import IngestConfig
    from clara_ray.ingest.pipeline import run_ingest

    cfg = IngestConfig(input=str(folder), out=str(out), until="extract", progress=False,
                       extract={"workers": workers, "cpus_per_worker": 2 / workers})
    start = time.perf_counter()
    summary = run_ingest(cfg)
    assert summary["documents_failed"] == 0, summary
    return time.perf_counter() - start, summary["pages"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdf-copies", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not PDF.exists():
        sys.exit(f"{PDF} missing: apt-get install -y libtasn1-doc")
    root = args.out or Path(tempfile.mkdtemp(prefix="clara-bench-ingest-"))
    shutil.rmtree(root / "docs", ignore_errors=True)
    build_corpus(root / "docs", args.pdf_copies)

    direct_s, pages = direct_docling(root / "docs", root / "direct")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    try:
        for workers in (1, 2):
            shutil.rmtree(root / f"ray{workers}", ignore_errors=True)
            results[workers] = ray_stage(root / "docs", root / f"ray{workers}", workers)
            assert results[workers][1] == pages
    finally:
        ray.shutdown()
    print(f"corpus: {len(list((root / 'docs').iterdir()))} files, {pages} pages")
    print(f"{'arm':<22}{'seconds':>9}{'pages/s':>9}{'vs direct':>11}")
    print(f"{'docling direct':<22}{direct_s:>9.1f}{pages / direct_s:>9.1f}{1.0:>10.2f}x")
    for workers, (seconds, _) in results.items():
        print(f"{f'ray data, {workers} worker(s)':<22}{seconds:>9.1f}{pages / seconds:>9.1f}"
              f"{seconds / direct_s:>10.2f}x")
    overhead = results[1][0] / direct_s - 1
    print(f"ray overhead (1 worker vs direct): {overhead:+.1%} (target <= +15%); "
          f"2-worker speed-up over 1: {results[1][0] / results[2][0]:.2f}x")


if __name__ == "__main__":
    main()
