"""The training speed-ups of issue 22, each arm on the same records in one process (2 threads).

    python -m bench.train_throughput --part speedups --squad ../shared/data/squad/squad-v1.1-dev-part-a.json

Stage 1 (reconstruction + QA records of SQuAD paragraphs, doc_max_length 256, CR 16): the
reference stream (shuffled micro-batches, logits at every position, every record's document
compressed) vs length-bucketed micro-batches with logits only where a label is predicted, and
then also document groups (data.group_documents: a paragraph's two records in one micro-batch,
its document compressed once). Same records, same number of optimizer steps: the ratio of real
(unpadded) tokens/s of the records is the ratio of step times.
Stage 3 (20 candidates per question): recompressing every candidate for every question vs the
frozen-compressor candidate cache (+ label-only logits). The cache's one-off cost, compressing
each distinct document once, is timed apart and also amortised over a whole epoch of the stage-3
data in a projection.
"""
from __future__ import annotations

import itertools
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from clara_ray.resources import shipped

MICRO, ACCUMULATION = 4, 2  # global batch 8, as the reproduction's stage-1 profile


@dataclass
class Arm:
    seconds: float
    samples: int
    tokens: int  # real tokens computed (a document compressed once counts once)
    positions: int
    loss: float  # mean over the micro-batches

    def line(self, label: str, record_tokens: int) -> str:
        """`record_tokens`: real tokens of the records themselves, the same in every arm."""
        return (f"  {label:48s} {self.samples / self.seconds:6.2f} samples/s  {record_tokens / self.seconds:8.1f} real tokens/s"
                f"  (padding {1 - self.tokens / max(self.positions, 1):.0%}, mean loss {self.loss:.3f})")


def _model(doc_max_length: int, threads: int):
    import torch

    from clara_ray import CLaRa, CLaRaConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return CLaRa.from_config(CLaRaConfig(backbone="smollm2-135m", compression_rate=16, doc_max_length=doc_max_length,
                                         memory_norm="embedding"), device="cpu")


def _train(model, stage: str, batches: list[list]) -> Arm:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95))
    model.train()
    tokens = positions = 0
    losses = []
    began = time.perf_counter()
    for step in range(0, len(batches), ACCUMULATION):
        for records in batches[step:step + ACCUMULATION]:
            out = model(records, stage)
            (out.loss / ACCUMULATION).backward()
            losses.append(float(out.loss))
            tokens, positions = tokens + out.num_tokens, positions + out.num_positions
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return Arm(time.perf_counter() - began, sum(map(len, batches)), tokens, positions, sum(losses) / len(losses))


def stage1(data: Path, steps: int, doc_max_length: int, threads: int) -> list[tuple[str, Arm]]:
    """Whole paragraphs (their reconstruction and QA records) sampled until the steps are full, in
    file order (a paragraph's records adjacent, as `build_squad_data` writes them)."""
    from clara_ray.data.records import read_records
    from clara_ray.train.data import arrange, length_bucketed

    groups: dict[str, list] = {}
    for record in read_records(data / "pretrain_data.jsonl", "compress_pretrain"):
        groups.setdefault(record.docs[0], []).append(record)
    order = list(groups.values())
    random.Random(0).shuffle(order)
    stream = list(itertools.islice((r for g in order for r in g), steps * MICRO * ACCUMULATION))
    shuffled = random.Random(0).sample(stream, len(stream))  # what Ray Data's local shuffle gives
    plain = [shuffled[i:i + MICRO] for i in range(0, len(shuffled), MICRO)]
    bucketed = list(length_bucketed(iter(plain), 8, random.Random(0)))
    # The loader's own arrangement, with the reproduction's shuffle buffer (16) and 8 buckets.
    grouped = list(arrange(iter([stream[i:i + MICRO] for i in range(0, len(stream), MICRO)]), MICRO,
                           shuffle_buffer=16, length_buckets=8, group_documents=True, seed=0))
    arms = []
    for label, batches, fast, distinct in (
            ("reference (shuffled stream, logits everywhere)", plain, False, False),
            ("length buckets + label-only logits", bucketed, True, False),
            ("+ document groups, each compressed once", grouped, True, True)):
        model = _model(doc_max_length, threads)
        model.prepare_stage("compress_pretrain")
        model.label_logits_only, model.encode_distinct = fast, distinct
        arms.append((label, _train(model, "compress_pretrain", batches)))
    return arms


def stage3(data: Path, questions: int, doc_max_length: int, threads: int) -> tuple[Arm, Arm, float, int, int, int]:
    """(reference arm, cached arm, seconds to fill the cache, documents in it, questions and
    distinct documents of the whole stage-3 file)."""
    from clara_ray.data.records import read_records

    everything = read_records(data / "end_to_end_data.jsonl", "end_to_end")
    records = random.Random(0).sample(everything, questions)
    batches = [records[i:i + MICRO // 2] for i in range(0, len(records), MICRO // 2)]
    model = _model(doc_max_length, threads)
    model.prepare_stage("end_to_end")
    model.label_logits_only, model.encode_distinct = False, False
    before = _train(model, "end_to_end", batches)
    model.label_logits_only = True
    model.cache_candidates()
    began = time.perf_counter()
    distinct = list(dict.fromkeys(d for r in records for d in r.docs))
    model._frozen_compress(distinct)
    fill = time.perf_counter() - began
    after = _train(model, "end_to_end", batches)
    corpus = len({d for r in everything for d in r.docs})
    return before, after, fill, len(distinct), len(everything), corpus


def main(squad: Path | None, steps: int, questions: int, doc_max_length: int, threads: int) -> None:
    from clara_ray.data.squad import TokenWindow, build_squad_data

    source = squad or shipped("examples/data/sample_squad.json")
    with tempfile.TemporaryDirectory(prefix="clara-speedups-") as tmp:
        data = Path(tmp)
        candidates = 20 if squad else 8  # the bundled sample has 16 paragraphs
        build_squad_data(source, data, instruct_docs=5, end_to_end_docs=candidates,
                         window=TokenWindow("smollm2-135m", doc_max_length), reconstruction=True)
        s1 = stage1(data, steps, doc_max_length, threads)
        s3 = stage3(data, questions, doc_max_length, threads) if questions else None
    print(f"\ntraining speed-ups: SmolLM2-135M, CR 16, doc_max_length {doc_max_length}, {threads} threads, "
          f"data {source.name}")
    print(f"stage 1: {steps} steps x {MICRO * ACCUMULATION} records (reconstruction + QA)")
    (_, reference), *faster = s1
    for label, arm in s1:
        print(arm.line(label, reference.tokens))
    for label, arm in faster:
        print(f"  {label}: {reference.seconds / arm.seconds:.2f}x real tokens/s and samples/s (target >= 1.5x)")
    if s3 is not None:
        _print_stage3(s3, questions, candidates)


def _print_stage3(s3: tuple[Arm, Arm, float, int, int, int], questions: int, candidates: int) -> None:
    before, after, fill, cached, epoch, corpus = s3
    print(f"stage 3: {questions} questions x {candidates} candidates")
    print(before.line("reference (recompress every candidate)", before.tokens))
    print(after.line("candidate cache + label-only logits", before.tokens))
    per_doc = fill / cached
    print(f"  samples/s, cache filled: {before.seconds / after.seconds:.2f}x (target >= 3x); one-off fill "
          f"{fill:.1f}s for {cached} documents ({per_doc * 1000:.0f} ms each)")
    per_question = (before.seconds / before.samples, after.seconds / after.samples)
    projected = epoch * per_question[0] / (corpus * per_doc + epoch * per_question[1])
    print(f"  one epoch of this stage-3 file ({epoch} questions over {corpus} distinct documents), fill "
          f"included: {projected:.2f}x")
