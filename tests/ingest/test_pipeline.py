"""The whole pipeline on a real Ray cluster, real docling and a scripted OpenAI server over HTTP."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clara_ray.data.records import read_records
from clara_ray.ingest.config import IngestConfig
from clara_ray.ingest.outputs import END_TO_END, ERRORS, INSTRUCT, PRETRAIN, RAW
from clara_ray.ingest.pipeline import run_ingest, synthesis_key
from clara_ray.ingest.storage import StageParts
from ingest_helpers import DISCOVER_KINDS, ScriptedOpenAI, api_overrides, make_documents

pytestmark = pytest.mark.slow
OUTPUTS = (PRETRAIN, INSTRUCT, END_TO_END, RAW, ERRORS, "summary.json")
REPO = Path(__file__).resolve().parents[2]


def _config(docs: Path, out: Path, server: ScriptedOpenAI) -> IngestConfig:
    return IngestConfig.model_validate(dict(
        input=str(docs), out=str(out), progress=False,
        api=api_overrides(server, timeout_s=1.0),
        # One worker per stage: on 2 shared cores, starting fewer actors beats parallelism.
        extract={"max_pages": 2, "workers": 1},
        caption={"workers": 1},
        synthesis={"verify_rounds": 2, "workers": 2},
        # MiniLM mining is covered in test_negatives; here random keeps the run short.
        negatives={"method": "random", "instruct_docs": 3, "end_to_end_docs": 4}))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _joined(texts) -> str:
    """Chunk texts as one line: items within a chunk are separated by newlines, chunks by spaces."""
    return " ".join(" ".join(texts).split())


def _snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = tmp_path_factory.mktemp("corpus") / "docs"
    return docs, make_documents(docs)


@pytest.fixture(scope="module")
def reference(ray_cluster, corpus, tmp_path_factory):
    """One full run with 30% of API calls failing (429, 500, timeouts, broken JSON)."""
    docs, expected = corpus
    server = ScriptedOpenAI(failure_rate=0.3, seed=1, hang_s=1.5).start()
    out = tmp_path_factory.mktemp("reference") / "out"
    summary = run_ingest(_config(docs, out, server))
    yield out, expected, summary, server
    server.stop()


def test_good_documents_yield_records_bad_ones_error_lines(reference):
    out, expected, summary, server = reference
    errors = _jsonl(out / ERRORS)
    chunks = _jsonl(out / RAW)
    pretrain_docs = {r.docs[0] for r in read_records(out / PRETRAIN, "compress_pretrain")}
    for name, outcome in expected.items():
        mine = [c for c in chunks if c["source"] == name]
        if outcome == "ok":
            assert mine, f"{name}: no chunks"
            assert any(c["text"] in pretrain_docs for c in mine), f"{name}: no training records"
            assert not [e for e in errors if e["source"].split("#")[0] == name], name
        elif outcome == "invalid_json":  # extracted fine, synthesis keeps failing
            assert mine and not any(c["text"] in pretrain_docs for c in mine)
            assert [e["kind"] for e in errors if e["source"].startswith(name)] == ["invalid_json"]
        else:
            stage = "discover" if outcome in DISCOVER_KINDS else "extract"
            assert [(e["stage"], e["kind"]) for e in errors if e["source"] == name] == [(stage, outcome)], name
            assert all(e["reason"] for e in errors)
    skipped = sum(o in DISCOVER_KINDS for o in expected.values())
    assert summary["inputs_skipped"] == skipped
    assert summary["documents_failed"] == sum(o not in ("ok", "invalid_json") for o in expected.values()) - skipped
    assert summary["errors"] == len(errors) and summary["qa_pairs"] == summary["records"][INSTRUCT]
    # The faults really happened, of every kind, and were absorbed.
    assert set(server.faults) == {"429", "500", "timeout", "broken_json"}
    assert summary["errors_by_kind"].keys() == {"conversion_failed", "corrupt_image", "empty_file", "invalid_json",
                                                "image_too_large", "not_a_file", "symlink_loop", "broken_link",
                                                "unreadable"}


def test_records_are_valid_stage_files_with_gold_and_negatives(reference):
    out, _, summary, _ = reference
    instruct = read_records(out / INSTRUCT, "instruct")
    e2e = read_records(out / END_TO_END, "end_to_end")
    knowledge = {c["text"] for c in _jsonl(out / RAW)}
    assert len(instruct) == len(e2e) == summary["qa_pairs"] >= 3 * summary["chunks_synthesized"]
    for record in e2e:
        assert len(record.docs) == 4 and len(set(record.docs)) == 4 and set(record.docs) <= knowledge
        assert record.answers[0] in record.docs[record.pos_index[0]]  # the gold passage holds the answer
    assert all(len(r.docs) == 3 for r in instruct)
    assert not any("UNSUPPORTED-ANSWER" in r.answers for r in instruct)  # verification removed it
    assert summary["regeneration_rounds"] >= summary["chunks_synthesized"]


def test_captions_land_at_their_markers(reference):
    out = reference[0]
    text = _joined(c["text"] for c in _jsonl(out / RAW) if c["source"] == "rivers.md")
    assert "drop sediment. [Image: A 320x200 picture, mostly red.] a figure" in text
    assert "<<image:" not in (out / RAW).read_text()
    photo = [c["text"] for c in _jsonl(out / RAW) if c["source"] == "large-photo.jpg"]
    assert photo == ["[Image: A 2048x683 picture, mostly green.]"]  # downscaled before captioning
    scan = _joined(c["text"] for c in _jsonl(out / RAW) if c["source"] == "scan-bomb.docx")
    assert "The map below shows the soundings. [Image: A 2048x2048 picture" in scan  # 13400 px, decoded at 1/4


def test_without_captioning_images_leave_no_trace(reference, corpus, tmp_path):
    """No vision model (the embedded default): images are left out, never described by a guess."""
    out, server = tmp_path / "out", ScriptedOpenAI().start()
    for cached in ("work/extract", "images"):  # extraction is the reference's (tested above)
        shutil.copytree(reference[0] / cached, out / cached)
    cfg = _config(corpus[0], out, server).model_copy(update={"until": "caption"})
    cfg.caption.enabled = False
    summary = run_ingest(cfg)
    server.stop()
    assert server.requests["caption"] == 0 and summary["images_captioned"] == 0
    assert "[Image:" not in (out / RAW).read_text()
    assert "drop sediment. a figure" in _joined(c["text"] for c in _jsonl(out / RAW) if c["source"] == "rivers.md")
    photo = [e for e in _jsonl(out / ERRORS) if e["source"] == "large-photo.jpg"]
    assert [(e["kind"], e["reason"]) for e in photo] == [("no_text", "only images, and captioning is off")]


def test_rerun_does_no_work_and_rewrites_identical_files(reference, corpus):
    out, _, _, server = reference
    before, calls = _snapshot(out), dict(server.requests)
    run_ingest(_config(corpus[0], out, server))
    assert dict(server.requests) == calls
    assert _snapshot(out) == before


def test_killed_run_resumes_to_identical_outputs(reference, corpus, ray_cluster, tmp_path):
    """kill -9 the driver in the middle of synthesis, rerun: same files as an uninterrupted run."""
    reference_out = reference[0]
    slow = ScriptedOpenAI(failure_rate=0.3, seed=7, hang_s=1.5, delay_s=0.2).start()
    out = tmp_path / "out"
    # Start from the reference's extraction and captions (their resume is tested above), so the
    # kill lands in synthesis, the long stage, without paying for docling again.
    for cached in ("work/extract", "work/caption", "images"):
        shutil.copytree(reference_out / cached, out / cached)
    config_path = tmp_path / "ingest.yaml"
    config_path.write_text(yaml.safe_dump(_config(corpus[0], out, slow).model_dump()))
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.ingest", "--config", str(config_path)],
                            cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while len(list((out / "work" / "synthesize").glob("part-*.parquet"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "synthesis did not start in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / PRETRAIN).exists()
    finished = set(StageParts(out / "work", "synthesize").rows())
    assert len(finished) >= 3
    asked_before = len(slow.generate_passages)

    slow.delay_s = 0.0
    rerun = subprocess.run([sys.executable, "-m", "pipelines.ingest", "--config", str(config_path)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    slow.stop()
    assert rerun.returncode == 0, rerun.stderr[-3000:]  # the adversarial inputs are error lines, not a failed run
    assert _snapshot(out) == _snapshot(reference_out)
    cfg = _config(corpus[0], out, slow)
    # The rerun asked only about chunks that had not finished before the kill.
    asked_again = {synthesis_key(p, cfg.api, cfg) for p in slow.generate_passages[asked_before:]}
    assert asked_again and not asked_again & finished
    for name in (PRETRAIN, INSTRUCT, END_TO_END):
        lines = (out / name).read_text().splitlines()
        assert len(lines) == len(set(lines)), f"duplicate records in {name}"
