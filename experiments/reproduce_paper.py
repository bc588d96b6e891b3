"""Reproduce the paper's claims in miniature on SQuAD: data -> training stages -> evaluation.

    python -m experiments.reproduce_paper --profile quick --squad ../shared/data/squad/squad-v1.1-dev-part-a.json
    python -m experiments.reproduce_paper --profile full  --squad ../shared/data/squad/squad-v1.1-dev-part-a.json

Profiles (see PROFILES): `quick` (CR 16, <= 45 minutes on 2 cores, 18-39 measured: is memory
read?), `full` (CR 16, 4, 32, >= 200 evaluation questions, several hours, resumable across
sessions), `quick-ablation` (quick plus two alternatives to its stage 2, both k=5 throughout: the
reference's reset generator, and stage 1's generator kept without the k=1 warm-up),
`windows-probe-own` / `windows-probe-document` (stage 1's windows alone at CR 4, ~45 minutes each:
which part of a paragraph the memory keeps under each model.window_positions) and `reference` (the
paper's recipe at the first run's small budget, for comparison); the `full-*` variants are described
where PROFILES defines them. `--rates 16,4` runs other compression rates with a profile's recipe.
Where a profile departs from the paper's recipe, the departure is a config value named in
`Recipe` and documented in docs/results/squad-mini/README.md.

Every step goes through the same entry points `ray job submit` uses (`python -m pipelines.*`,
run as subprocesses) and is skipped when its output exists, so a run cut off at a session's end
resumes in the next: finished steps are not redone, and the interrupted step resumes on its own
(training from its last Ray Train checkpoint, evaluation from its partial predictions).
Step timings accumulate in <work-dir>/timings.json, written while a step runs (an interrupted step
keeps the time it spent); the combined report (Markdown + PNG) lands in --results-dir with the
command and the wall time of each step, rewritten as each step ends. Beside it, run_record.json
keeps the finished steps, their times and every evaluation's summary: commit it with the report,
and a report survives the loss of its work dir (`--only-report` rebuilds it from the record).
`--only` runs a subset of the plan, e.g. one baseline on a new machine.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from clara_ray.atomic import write_atomic
from clara_ray.data.squad import CORPUS_FILE, INSTRUCT_K1_FILE, STAGE_FILES, WINDOWS_FILE
from pipelines.cli_step import cli_step

# The retrieval warm-up reads stage 3's records (their questions and `pos_index`).
STAGE_DATA = {**STAGE_FILES, "retrieval_warmup": STAGE_FILES["end_to_end"]}


@dataclass(frozen=True)
class StageRun:
    """One training stage of a profile: its optimizer steps and config overrides; `name` and
    `data` tell apart two runs of one stage (a curriculum: stage 1 on short windows first)."""
    stage: str
    steps: int
    overrides: tuple[str, ...] = ()
    name: str = ""  # defaults to the stage
    data: str = ""  # file of the data directory; defaults to the stage's

    @property
    def label(self) -> str:
        return self.name or self.stage

    @property
    def data_file(self) -> str:
        return self.data or STAGE_DATA[self.stage]

    @property
    def trains_compressor(self) -> bool:
        frozen = self.stage == "instruct" and "train_compressor=false" in self.overrides
        return self.stage in ("compress_pretrain", "instruct") and not frozen


@dataclass(frozen=True)
class Recipe:
    """What a profile trains and evaluates; every field is a value of the stage configs."""
    rates: tuple[int, ...]
    doc_max_length: int
    stages: tuple[StageRun, ...]
    model: tuple[str, ...] = ()  # CLaRaConfig overrides at stage 1 (model.*)
    reconstruction: bool = False  # stage-1 data reconstructs every paragraph
    reconstruction_window: int = 0  # also write pretrain_windows.jsonl of N-token windows (0: none)
    eval_per_article: int = 5
    reconstruction_eval: int = 0  # held-out paragraphs the stage-1 export reconstructs
    retrieval_checkpoints: bool = False  # Recall@k of the stage-2 (and warm-up) exports too
    text_rag_systems: bool = True  # text RAG over CLaRa's / MiniLM's top-k in the CLaRa evaluation
    foreign_memory: bool = True  # CLaRa also answers from k other articles' paragraphs (the floor)
    text_rag_lora: bool = True  # the LoRA text-RAG baseline, trained on stage 2's data and sample count
    # Once the compressor stops training, precompress the training paragraphs into a store and
    # let the later stages read their candidates from it (speed.candidate_store).
    candidate_store: bool = False
    use_train_articles: int = 0  # train on only the first N training articles (0: all); the held-out split stays
    # Alternatives to the profile's stage 2, each trained from the same stage-1 export and store and
    # evaluated beside the profile's own stage-2 export (oracle vs wrong_memory, answer CE).
    stage2_variants: tuple["Variant", ...] = ()
    # False: no evaluation of the last export's answers (a probe of stage 1, read from its reconstructions).
    answers: bool = True

    def __post_init__(self):
        # With the text-RAG rows the first rate keeps the evaluation YAML's systems, which list foreign_memory.
        if not self.foreign_memory and self.text_rag_systems:
            raise ValueError("a profile without foreign_memory needs text_rag_systems=False: with the text-RAG rows "
                             "its first rate evaluates the YAML's systems, foreign_memory among them")


@dataclass(frozen=True)
class Variant:
    """One recipe choice of stage 2 changed, all else equal: its runs replace the profile's stage 2."""
    name: str
    stages: tuple[StageRun, ...]


_FAST = ("data.length_buckets=8",)
_FLAT = ("optim.schedule=constant",)
_DECAY = ("optim.schedule=cosine", "optim.min_lr_ratio=0")
_ANNEAL = (*_DECAY, "seed=1")
_MINIATURE_MODEL = ("model.memory_norm=centered", "model.mse_weight=0")
# The memory centred on its batch's own mean while the compressor trains, the running mean recomputed
# before monitors and export (memory_center_training: batch, docs/training.md), instead of on a running
# mean that lags and lets a shared offset through.
_BATCH_CENTER_MODEL = (*_MINIATURE_MODEL, "model.memory_center_training=batch")
_BIG, _SMALL = ("batch.global_size=16", "batch.micro_size=8"), ("batch.global_size=8", "batch.micro_size=4")
# Stage 2 of the miniature curriculum, except how the generator starts (generator_init). Micro-batches
# of 4 (2 accumulation steps): at CR 4 the generator reads 5 x 48 memory vectors, and a micro-batch
# of 8 took ~10 GB per worker, more than two workers have on a 24 GB machine.
# The lr schedule is added per run (flat unless `stage2_decay`).
_STAGE2 = ("train_compressor=false", "optim.lr=5e-4", "batch.global_size=16", "batch.micro_size=4", *_FAST)


def miniature_stages(windows: int, paragraphs: int, instruct: int, warmup: int, end_to_end: int,
                     instruct_k1: int = 0, anneal: int = 0, stage2_decay: bool = False) -> tuple[StageRun, ...]:
    """The miniature curriculum (docs/results/squad-mini/README.md), optimizer steps per run (0
    leaves a run out): stage 1 first reconstructs short windows (where a small generator starts
    reading memory), then whole paragraphs + QA; stage 2 keeps stage 1's generator and trains it
    alone on cached vectors (compressor frozen), so it sees many more questions per CPU-hour; a
    contrastive warm-up gives the query reasoner a start before stage 3. Stages 1-2 keep their lr
    flat: in runs of a few dozen steps a cosine decays before the memory gap starts to grow.
    `instruct_k1`: stage 2 first on each question with its gold paragraph alone (k=1), where the
    answer can only come from that one memory (measured by the quick-ablation profile).
    `anneal`: stage 1 goes on over the paragraphs with its lr decaying to zero (a fresh optimizer and
    another shuffle), where the flat-lr paragraph phase had levelled off.
    `stage2_decay`: each stage-2 run's lr decays to zero on a cosine instead of staying flat."""
    runs = (
        StageRun("compress_pretrain", windows, ("optim.lr=1e-3", *_FLAT, *_BIG, *_FAST), name="compress_windows",
                 data=WINDOWS_FILE),
        StageRun("compress_pretrain", paragraphs, ("optim.lr=1e-3", *_FLAT, *_SMALL, *_FAST)),
        StageRun("compress_pretrain", anneal, ("optim.lr=1e-3", *_ANNEAL, *_SMALL, *_FAST), name="compress_anneal"),
        _instruct_k1(instruct_k1, stage2_decay),
        _instruct_k5(instruct, stage2_decay),
        StageRun("retrieval_warmup", warmup, ("optim.lr=5e-4", *_BIG)),
        StageRun("end_to_end", end_to_end, ("optim.lr=1e-4", *_SMALL)),
    )
    return tuple(run for run in runs if run.steps)


def _instruct_k5(steps: int, decay: bool = False) -> StageRun:
    """Stage 2 at k=5 with stage 1's generator kept (`decay`: the lr on a cosine to zero, not flat)."""
    return StageRun("instruct", steps, ("generator_init=previous", *_STAGE2, *(_DECAY if decay else _FLAT)))


def _instruct_k1(steps: int, decay: bool = False) -> StageRun:
    """The same run on each question with its gold paragraph alone."""
    return replace(_instruct_k5(steps, decay), name="instruct_k1", data=INSTRUCT_K1_FILE)


def stage2_ablation(steps: int) -> tuple[Variant, ...]:
    """Against the profile's stage 2 (stage 1's generator kept, half of it the k=1 warm-up), with the
    same number of steps at k=5 throughout: the reference's (reset generator) and stage 1's generator kept."""
    return (
        Variant("reset", (StageRun("instruct", steps, ("generator_init=reset", *_STAGE2, *_FLAT)),)),
        Variant("k5_only", (_instruct_k5(steps),)),
    )


def longer_stage2(k1: int, k5: int) -> Variant:
    """The miniature stage 2 (k=1 warm-up, then k=5, stage 1's generator kept) with other step counts."""
    return Variant(f"stage2_{k1}_{k5}", (_instruct_k1(k1), _instruct_k5(k5)))


_MINIATURE = dict(doc_max_length=192, model=_MINIATURE_MODEL, reconstruction=True, reconstruction_window=48,
                  candidate_store=True)
PROFILES: dict[str, Recipe] = {
    # The paper's recipe (reset generator, lr 1e-4 / 5e-6, QA-only stage 1) at the first run's budget.
    "reference": Recipe(rates=(16,), doc_max_length=128, eval_per_article=5, stages=(
        StageRun("compress_pretrain", 50), StageRun("instruct", 50), StageRun("end_to_end", 40))),
    # 6 of the 28 training articles: the store of their paragraphs (~300) is built in minutes;
    # 80 questions, since 1-2 points of F1 on 40 are one or two answers;
    # most of the budget goes to stage 1 on windows, where reading starts. Half of stage 2 is the
    # k=1 warm-up, as in `full` (quick-ablation: answers change with the memory more often).
    # No foreign_memory answers: ~4 more minutes would leave its 45-minute budget little margin.
    "quick": Recipe(rates=(16,), eval_per_article=10, reconstruction_eval=12, text_rag_systems=False,
                    text_rag_lora=False, foreign_memory=False, use_train_articles=6,
                    stages=miniature_stages(22, 6, 10, 8, 4, instruct_k1=10), **_MINIATURE),
    # ~4x the quick budget per rate (1,600 stage-1 windows, 1,920 stage-2 questions), 200 held-out
    # questions, three rates: 1.5-3 hours per rate on 2 cores, resumable across sessions. Half of
    # stage 2 is the k=1 warm-up: in quick-ablation it widened the answer CE gap between own and
    # swapped memory at equal samples (+0.026 +- 0.012 nats, paired, 80 questions).
    "full": Recipe(rates=(16, 4, 32), eval_per_article=25, reconstruction_eval=32, retrieval_checkpoints=True,
                   stages=miniature_stages(100, 40, 60, 60, 40, instruct_k1=60), **_MINIATURE),
}
# `full` at CR 16 with stage 1 stretched to one epoch of each of its files (4,310 windows / 16,
# 2,550 paragraph records / 8): the full run's stage 1 saw 37% and 13% of them, and its memories
# reconstruct held-out paragraphs at ROUGE-L 12-15. Does a longer stage 1 make the generator read?
# Later stages as in `full`; the bare backbone's rows and the LoRA baseline are full's (unchanged).
# Its stage 2 is also trained twice as long beside the profile's (stage 2 is cheap: the compressor is
# frozen and the candidates come from the store), both evaluated on oracle vs wrong_memory answers;
# added after the run, so rerunning the profile in its work dir trains and evaluates only that.
PROFILES["full-stage1-epoch"] = replace(PROFILES["full"], rates=(16,), text_rag_systems=False, text_rag_lora=False,
                                        stages=miniature_stages(270, 320, 60, 60, 40, instruct_k1=60),
                                        stage2_variants=(longer_stage2(120, 120),))
# `full-stage1-epoch`'s stage 1 split differently, in about the same time (3.7 h): two epochs of
# windows (540 x 16), where its held-out CE was still falling ~0.1 nats per 20 steps at one epoch,
# and a shorter paragraph phase (120 x 8), whose gap grew only ~0.3 nats over its last 260 steps.
# Later stages and the stage-2 variant as in `full-stage1-epoch`.
PROFILES["full-stage1-2epochs"] = replace(PROFILES["full-stage1-epoch"],
                                          stages=miniature_stages(540, 120, 60, 60, 40, instruct_k1=60))
# `full-stage1-epoch` with its stage-2 variant `stage2_120_120` as its stage 2 (120 k=1 + 120 k=5 steps):
# in two pairs of runs from one stage-1 export each, the doubled stage 2 raised the answer CE gap
# (own vs swapped memory) both times (+0.06, +0.07 +- 0.02 nats/token, paired) and oracle F1 within
# noise (+1.2, +0.7). This profile carries it through the warm-up and stage 3 to the final evaluation.
# Measured (2026-12-06): after stage 3 the gain is gone (oracle F1 -1.1 +- 1.4, CE gap +0.007 +- 0.020).
# A work dir of `full-stage1-epoch` that trained the variant can seed it (docs/results/squad-mini/README.md).
PROFILES["full-stage2x2"] = replace(PROFILES["full-stage1-epoch"], stage2_variants=(),
                                    stages=miniature_stages(270, 320, 120, 60, 40, instruct_k1=120))
# `full-stage1-epoch` with 120 more stage-1 steps over the paragraphs (960 records, ~0.4 epoch), the lr
# decaying from 1e-3 to 0: at the flat 1e-3 the paragraph phase's held-out CE and memory gap (own vs
# another paragraph's memory) levelled off after ~170 of its 320 steps (2.28 and 1.2 nats), the
# plateau a decaying lr usually gets below. A work dir of `full-stage1-epoch` can seed its first two
# runs (docs/results/squad-mini/README.md). Measured (2026-12-06): the stage-1 memory gap 1.20 -> 1.47,
# but after stage 3 oracle F1 -1.1 +- 1.2 and the answer CE gap +0.015 +- 0.027 against the rerun.
PROFILES["full-stage1-anneal"] = replace(PROFILES["full-stage1-epoch"], stage2_variants=(),
                                         stages=miniature_stages(270, 320, 60, 60, 40, instruct_k1=60, anneal=120))
# `full-stage1-epoch` with stage 2's lr decaying from 5e-4 to 0 on a cosine in each of its two runs
# (k=1, then k=5) instead of flat: in the rerun and in `full-stage1-anneal` the k=1 run's held-out
# memory gap fell by ~40% over its steps 30-60 (1.01 -> 0.60, 1.10 -> 0.65) while its held-out CE rose,
# at the flat 5e-4. A work dir of `full-stage1-epoch` can seed its stage 1 and store. Measured (2026-12-06):
# the k=1 run keeps its gap (0.95 against 0.60), the k=5 run ends as before (0.31 against 0.30), and after
# stage 3 oracle F1 -1.4 +- 1.4 and the answer CE gap -0.022 +- 0.014 against the rerun.
PROFILES["full-stage2-decay"] = replace(PROFILES["full-stage1-epoch"], stage2_variants=(),
                                        stages=miniature_stages(270, 320, 60, 60, 40, instruct_k1=60,
                                                                stage2_decay=True))
# `quick` and `full-stage1-epoch` with the memory centred on its batch (_BATCH_CENTER_MODEL). Measured
# (2026-12-06, quick): the shared offset is gone (read similarity 0.09-0.21 against ~0.6-0.8), stage-1
# reconstructions of held-out paragraphs ROUGE-L 9.1 against 1.1, F1 11.2 against 7.9 with the oracle
# top-k, but 11.4 with swapped memory too (the running mean: 6.1). At CR 4 over a long stage 1 the
# offset was 8-12x the part that tells memories apart: `full-batch-center` is for that, CR 4 first.
PROFILES["quick-batch-center"] = replace(PROFILES["quick"], model=_BATCH_CENTER_MODEL)
PROFILES["full-batch-center"] = replace(PROFILES["full-stage1-epoch"], rates=(4, 16), stage2_variants=(),
                                        model=_BATCH_CENTER_MODEL)
# `full-batch-center` at CR 4 with each stage-1 window compressed where it sits in its paragraph
# (model.window_positions: document). Under the batch rule at CR 4 the memory kept the ~48 tokens just
# before it, a paragraph's end, and answers in its first 60 words (65% of them) barely read it (2026-12-07).
_WINDOW_POSITIONS_MODEL = (*_BATCH_CENTER_MODEL, "model.window_positions=document")
PROFILES["full-window-positions"] = replace(PROFILES["full-batch-center"], rates=(4,), model=_WINDOW_POSITIONS_MODEL)
# A probe of window_positions at ~a tenth of full-window-positions' cost: stage 1's window phase alone at
# CR 4 (120 of its 270 steps: by then, in session 39, held-out windows came back almost verbatim), each arm
# judged by which words of 32 held-out whole paragraphs its memory keeps (copied words by position; a whole
# paragraph is laid out alike in both arms) and by the monitor's held-out gap on windows. "own" should keep
# a paragraph's end, "document" every part of it.
_WINDOWS_PROBE = replace(PROFILES["full-batch-center"], rates=(4,), answers=False, candidate_store=False,
                         text_rag_lora=False, stages=miniature_stages(120, 0, 0, 0, 0))
PROFILES["windows-probe-own"] = _WINDOWS_PROBE
PROFILES["windows-probe-document"] = replace(_WINDOWS_PROBE, model=_WINDOW_POSITIONS_MODEL)
# Memory token j right after the first (j+1)/n of the text (model.memory_layout: interleaved) instead of all
# after it. The probe above showed the reference layout's memory keeping a paragraph's end, the part
# nearest the memory tokens; interleaved, every part of a paragraph has memory tokens next to it. The
# probe arm, `quick` (compared with quick-batch-center) and `full-batch-center` at CR 4 with it.
_INTERLEAVED_MODEL = (*_BATCH_CENTER_MODEL, "model.memory_layout=interleaved")
PROFILES["windows-probe-interleaved"] = replace(_WINDOWS_PROBE, model=_INTERLEAVED_MODEL)
PROFILES["quick-interleaved"] = replace(PROFILES["quick"], model=_INTERLEAVED_MODEL)
PROFILES["full-interleaved"] = replace(PROFILES["full-batch-center"], rates=(4,), model=_INTERLEAVED_MODEL)
# The quick profile plus two alternatives to its stage 2; with `--work-dir runs/repro-quick` it
# reuses a finished quick run and only trains and evaluates the alternatives (15 minutes measured).
PROFILES["quick-ablation"] = replace(PROFILES["quick"], stage2_variants=stage2_ablation(20))


@dataclass
class Step:
    name: str
    argv: list[str]
    done_marker: Path  # the step is finished when this file exists

    @property
    def finished(self) -> bool:
        return self.done_marker.exists()


@dataclass
class Plan:
    squad: Path
    work_dir: Path
    recipe: Recipe = field(default_factory=lambda: PROFILES["reference"])
    eval_squad: Optional[Path] = None  # evaluate on this file instead of --squad's held-out articles
    train_articles: int = 28
    total_articles: int = 36
    max_candidates: int = 20

    @property
    def rates(self) -> tuple[int, ...]:
        return self.recipe.rates

    def export_dir(self, rate: int, stage: str) -> Path:
        return (self.work_dir / "runs" / f"cr{rate}-{stage}" / "model").resolve()

    def eval_dir(self, rate: int) -> Path:
        return self.eval_dir_named(f"cr{rate}")

    def eval_dir_named(self, name: str) -> Path:
        return (self.work_dir / "eval" / name).resolve()

    @property
    def data_dir(self) -> Path:
        return (self.work_dir / "data").resolve()

    def steps(self) -> list[Step]:
        recipe, data = self.recipe, self.data_dir
        build = [sys.executable, "-m", "pipelines.build_squad_data", "--squad", str(self.squad), "--out", str(data),
                 "--train-articles", str(self.train_articles), "--doc-max-length", str(recipe.doc_max_length)]
        if recipe.reconstruction:
            build.append("--reconstruction")
        if recipe.reconstruction_window:
            build += ["--reconstruction-window", str(recipe.reconstruction_window)]
        if recipe.use_train_articles:
            build += ["--use-train-articles", str(recipe.use_train_articles)]
        steps = [Step("build_data", build, data / STAGE_DATA["end_to_end"])]
        for rate in recipe.rates:
            steps += self._rate_steps(rate)
        if recipe.text_rag_lora:  # last: reading stage 2's samples as text is the longest step of all
            steps += self._text_rag_lora_steps()
        return steps

    def store_dir(self, rate: int) -> Path:
        return (self.work_dir / "stores" / f"cr{rate}-train").resolve()

    def _train_step(self, rate: int, run: StageRun, previous: Optional[Path], store: Optional[Path]) -> Step:
        """Train `run` from the export `previous` (None: a new model at `rate`), candidates from `store`."""
        argv = [sys.executable, "-m", "pipelines.train", "--stage", run.stage,
                "--config", f"configs/train/cpu/{run.stage}.yaml",
                f"data.paths=[{self.data_dir / run.data_file}]", f"max_steps={run.steps}",
                f"checkpoint.every_steps={max(1, min(20, run.steps))}",
                f"run.name=cr{rate}-{run.label}", f"run.storage_path={(self.work_dir / 'runs').resolve()}",
                *self._monitor(run), *run.overrides]
        if previous is None:
            argv += [f"model.compression_rate={rate}", f"model.doc_max_length={self.recipe.doc_max_length}",
                     "model.dtype=float32", *self.recipe.model]
        else:
            # the model is the previous run's; the stage YAML's `model` fields would override it
            argv += [f"init_from={previous}", "model=null"]
        if store is not None:
            argv.append(f"speed.candidate_store={store}")
        return Step(f"train_cr{rate}_{run.label}", argv, self.export_dir(rate, run.label) / "clara_config.json")

    def _rate_steps(self, rate: int) -> list[Step]:
        recipe, steps, previous, store = self.recipe, [], None, None
        last_compressor_run = max(i for i, run in enumerate(recipe.stages) if run.trains_compressor)
        stage1 = self.export_dir(rate, recipe.stages[last_compressor_run].label)
        last_stage1_run = max((i for i, run in enumerate(recipe.stages) if run.stage == "compress_pretrain"), default=-1)
        for i, run in enumerate(recipe.stages):
            steps.append(self._train_step(rate, run, previous, store))
            previous = self.export_dir(rate, run.label)
            steps += self._checkpoint_diagnostics(rate, run.label, previous, stage1_done=i == last_stage1_run)
            if recipe.candidate_store and i == last_compressor_run < len(recipe.stages) - 1:
                store = self.store_dir(rate)
                steps.append(Step(f"precompress_cr{rate}", [
                    sys.executable, "-m", "pipelines.precompress", "--checkpoint", str(previous),
                    "--corpus", str(self.data_dir / CORPUS_FILE), "--out", str(store),
                    "--config", "configs/precompress.yaml"], store / "CURRENT"))
        if recipe.answers:
            steps.append(self._evaluate(f"cr{rate}", previous, f"CR={rate}", self._systems(rate)))
        return steps + self._variant_steps(rate, stage1, store)

    def _systems(self, rate: int) -> list[str]:
        """Overrides of the evaluation YAML's systems: CLaRa (normal, oracle, wrong_memory, foreign_memory, answer CE
        own vs other), text RAG over MiniLM's and CLaRa's top-k, closed book. `text_rag_systems` off
        drops the text-RAG ones (each reads five paragraphs as text: the slowest rows on a CPU).
        Text RAG over MiniLM's top-k and closed book run the bare backbone, whatever the checkpoint:
        they are scored with the first rate only."""
        clara = _clara_system("normal", *self._memory_settings())
        if not self.recipe.text_rag_systems:
            return [f"harness.systems=[{clara}, {{name: closed_book, kind: closed_book}}]"]
        if rate != self.recipe.rates[0]:
            return [f"harness.systems=[{clara}, {{name: text_rag_clara_topk, kind: text_rag, retriever: clara}}]"]
        return []

    def _memory_settings(self) -> tuple[str, ...]:
        """The settings that say whether CLaRa reads its memory: oracle vs wrong_memory, and
        foreign_memory unless the profile leaves it out."""
        return ("oracle", "wrong_memory", *(("foreign_memory",) if self.recipe.foreign_memory else ()))

    def _variant_steps(self, rate: int, stage1: Path, store: Optional[Path]) -> list[Step]:
        """The profile's stage-2 export and each stage-2 variant (from the same stage-1 export),
        evaluated alike: oracle vs wrong_memory and foreign_memory answers, answer CE (retrieval is stage 3's)."""
        if not self.recipe.stage2_variants:
            return []
        reads = [f"harness.systems=[{_clara_system(*self._memory_settings())}]", "harness.retrievers=[clara]"]
        own = next(run for run in reversed(self.recipe.stages) if run.stage == "instruct")
        steps = [self._evaluate(f"cr{rate}-stage2", self.export_dir(rate, own.label), f"CR={rate} stage 2", reads)]
        for variant in self.recipe.stage2_variants:
            previous = stage1
            for run in variant.stages:
                run = replace(run, name=f"{variant.name}_{run.label}")
                steps.append(self._train_step(rate, run, previous, store))
                previous = self.export_dir(rate, run.label)
            steps.append(self._evaluate(f"cr{rate}-stage2-{variant.name}", previous,
                                        f"CR={rate} stage 2, {variant.name}", reads))
        return steps

    def _monitor(self, run: StageRun) -> list[str]:
        """Stages 1-2 log held-out CE with own vs swapped documents as they train (never trained on)."""
        if run.stage not in ("compress_pretrain", "instruct"):
            return []
        return [f"monitor.path={self.data_dir / ('heldout_' + run.data_file)}", "monitor.every_steps=10"]

    def _checkpoint_diagnostics(self, rate: int, stage: str, export: Path, stage1_done: bool) -> list[Step]:
        """Evaluations of intermediate exports (by run label): stage-1 reconstruction (of the last stage-1 run),
        retrieval before stage 3."""
        recipe, none = self.recipe, ["harness.systems=[]"]
        if stage1_done and recipe.reconstruction_eval:
            return [self._evaluate(f"cr{rate}-stage1", export, f"CR={rate} stage 1",
                                   [*none, "harness.retrievers=[]", f"harness.reconstruction={recipe.reconstruction_eval}"])]
        if recipe.retrieval_checkpoints and stage in ("instruct", "retrieval_warmup"):
            label = {"instruct": "before stage 3", "retrieval_warmup": "after warm-up"}[stage]
            return [self._evaluate(f"cr{rate}-{stage}", export, f"CR={rate} {label}", [*none, "harness.retrievers=[clara]"])]
        return []

    def _evaluate(self, name: str, checkpoint: Path, label: str, extra: list[str]) -> Step:
        out = self.eval_dir_named(name)
        if self.eval_squad is None:
            data = [f"data.path={self.squad}", f"data.article_range=[{self.train_articles},{self.total_articles}]"]
        else:
            data = [f"data.path={self.eval_squad.resolve()}"]
        return Step(f"evaluate_{name.replace('-', '_')}", [
            sys.executable, "-m", "pipelines.evaluate", "--config", "experiments/configs/eval_squad_cpu.yaml",
            f"checkpoint={checkpoint}", f"output_dir={out}", f"label={label}", *data,
            f"data.per_article={self.recipe.eval_per_article}", f"data.max_candidates={self.max_candidates}", *extra,
        ], out / "summary.json")

    def _text_rag_lora_steps(self) -> list[Step]:
        """The LoRA text-RAG baseline: stage 2's data and number of samples, documents read as text."""
        checkpoint = (self.work_dir / "text_rag_lora").resolve()
        batch = 4
        samples = sum(run.steps * _global_size(run) for run in self.recipe.stages if run.stage == "instruct")
        steps = max(1, samples // batch)
        system = "[{name: text_rag_lora, kind: text_rag, retriever: minilm, adapter: generator}]"
        return [
            Step("train_text_rag_lora", [sys.executable, "-m", "experiments.text_rag_lora", "--data",
                                         str(self.data_dir / STAGE_DATA["instruct"]), "--out", str(checkpoint),
                                         "--steps", str(steps), "--batch-size", str(batch)],
                 checkpoint / "text_rag_lora.json"),
            self._evaluate("text_rag_lora", checkpoint, "text-RAG LoRA",
                           [f"harness.systems={system}", "harness.retrievers=[minilm]"]),
        ]


def _global_size(run: StageRun) -> int:
    """The run's samples per optimizer step (its override, else the CPU stage YAMLs' 8)."""
    return next((int(o.split("=")[1]) for o in run.overrides if o.startswith("batch.global_size=")), 8)


# How often a running step's time so far is written to timings.json: a step stopped with the
# session (its process killed) keeps the time it had spent, to within this many seconds.
TIMING_FLUSH_S = 30.0


def _run_step(step: Step, log_dir: Path, spent: Callable[[float], None]) -> None:
    """Run one step, its output appended to its log; `spent(seconds so far)` is called every
    TIMING_FLUSH_S and at the end."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{step.name}.log"
    typer.echo(f"[{step.name}] {shlex.join(step.argv)}\n  log: {log}")
    start = time.perf_counter()
    with log.open("a") as fh:
        process = subprocess.Popen(step.argv, stdout=fh, stderr=subprocess.STDOUT)
        while True:
            try:
                code = process.wait(timeout=TIMING_FLUSH_S)
                break
            except subprocess.TimeoutExpired:
                spent(time.perf_counter() - start)
    spent(time.perf_counter() - start)
    if code != 0 or not step.finished:
        typer.echo(f"step '{step.name}' failed (exit {code}); see {log}. Rerun the same command to resume.", err=True)
        raise typer.Exit(1)


def _timing_recorder(timings: dict[str, float], timings_file: Path, name: str) -> Callable[[float], None]:
    """Records a step's time as what earlier sessions spent on it plus this run's time so far."""
    before = timings.get(name, 0.0)

    def spent(seconds: float) -> None:
        timings[name] = before + seconds
        # rewritten every TIMING_FLUSH_S: a kill mid-write must not lose every step's time
        write_atomic(timings_file, json.dumps(timings, indent=2))

    return spent


# Beside the report, in git: every finished step, its time and each evaluation's summary (paths
# relative to the working directory). The work dir (checkpoints, logs) is lost with its machine;
# the report is then rebuilt from this record, and a new run of the same plan adds to it.
RUN_RECORD = "run_record.json"


def _read_record(path: Path) -> dict:
    if not path.exists():
        return {"finished": [], "timings": {}, "summaries": {}}
    try:
        record = json.loads(path.read_text())
        return {key: record[key] for key in ("finished", "timings", "summaries")}
    except (ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"{path} is not a run record of this script ({exc!r}); move it away to start "
                                 "a new one", param_hint="--results-dir") from None


def _portable(summary: dict) -> dict:
    """The summary with its machine paths (checkpoint, store, data file) relative to the working directory."""
    from clara_ray.evaluation.report import display_path

    root = Path.cwd()
    data = {**summary.get("data", {}), "path": display_path(summary.get("data", {}).get("path"), root)}
    return {**summary, "checkpoint": display_path(summary.get("checkpoint"), root),
            "store": summary.get("store") and display_path(summary["store"], root), "data": data}


def _update_record(steps: list[Step], results_dir: Path, timings: dict[str, float]) -> dict:
    """Adds the work dir's finished steps, times and evaluation summaries to the run record."""
    path = results_dir / RUN_RECORD
    record = _read_record(path)
    finished = set(record["finished"]) | {step.name for step in steps if step.finished}
    for name, seconds in timings.items():  # a step redone on a new machine keeps its longer attempt
        record["timings"][name] = max(seconds, record["timings"].get(name, 0.0))
    for step in steps:  # an evaluation's done marker is its summary.json
        if step.name.startswith("evaluate") and step.done_marker.exists():
            record["summaries"][step.name] = _portable(json.loads(step.done_marker.read_text()))
    record["finished"] = [step.name for step in steps if step.name in finished] + sorted(
        finished - {step.name for step in steps})  # another profile's steps in a shared results dir stay
    results_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True))
    return record


def _write_results(plan: Plan, results_dir: Path, command: str, timings: dict[str, float],
                   selected: Optional[set[str]] = None) -> Path:
    """The report of the plan's steps, or with `--only` of the `selected` ones and those the record holds."""
    from clara_ray.evaluation.report import write_report

    steps = plan.steps()
    record = _update_record(steps, results_dir, timings)
    steps = [step for step in steps if selected is None or step.name in selected
             or step.name in record["finished"] or step.name in record["timings"]]
    summaries = [record["summaries"][step.name] for step in steps if step.name in record["summaries"]]
    # a work dir shared by two profiles (quick, quick-ablation) holds both plans' timings
    timings = {step.name: record["timings"][step.name] for step in steps if step.name in record["timings"]}
    lines = [f"Command: `{command}`", ""]
    if pending := [step.name for step in steps if step.name not in record["finished"]]:
        lines += [f"**Partial: {len(steps) - len(pending)} of {len(steps)} steps finished.** Not finished yet: "
                  f"{', '.join(pending)}. Rerunning the command resumes.", ""]
    lines += [f"Total wall time of all steps (summed over sessions): {sum(timings.values()) / 3600:.2f} h", "",
              "| step | wall time (min) |", "|---|---:|"]
    # an interrupted step keeps the time it has spent so far; say so rather than pass it off as its time
    lines += [f"| {name} | {seconds / 60:.1f}{' (unfinished)' if name in pending else ''} |"
              for name, seconds in timings.items()]
    return write_report(summaries, results_dir, title="CLaRa in miniature: SQuAD, SmolLM2-135M, CPU",
                        preamble="\n".join(lines))


def _clara_system(*settings: str) -> str:
    """The evaluation YAML's entry (flow style, for a command-line override) of CLaRa in `settings`."""
    return f"{{name: clara, kind: clara, settings: [{', '.join(settings)}]}}"


def _parse_rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint="--rates") from None
    if not rates or any(rate < 1 for rate in rates):
        raise typer.BadParameter(f"{text!r}: every compression rate must be >= 1", param_hint="--rates")
    return rates


def _select_steps(steps: list[Step], only: Optional[str]) -> set[str]:
    """Names of the steps `--only` selects (all without it); a pattern matching no step is an error."""
    if only is None:
        return {step.name for step in steps}
    patterns = [part.strip() for part in only.split(",") if part.strip()]
    if unmatched := [p for p in patterns if not any(fnmatch(step.name, p) for step in steps)]:
        raise typer.BadParameter(f"{', '.join(unmatched)} matches no step of this plan (see --dry-run)",
                                 param_hint="--only")
    return {step.name for step in steps if any(fnmatch(step.name, p) for p in patterns)}


def _relative_to_cwd(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


@cli_step
def main(
    squad: Annotated[Path, typer.Option(help="SQuAD v1.1 JSON (split by article into train / evaluation)")],
    profile: Annotated[str, typer.Option(help=f"one of {', '.join(PROFILES)}")] = "quick",
    eval_squad: Annotated[Optional[Path], typer.Option(
        help="evaluate on this SQuAD file (every article) instead of --squad's held-out articles")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(help="data, checkpoints, evaluations, timings")] = None,
    results_dir: Annotated[Optional[Path], typer.Option(help="where the combined report goes")] = None,
    train_articles: Annotated[int, typer.Option(help="first N articles train, the rest evaluate")] = 28,
    rates: Annotated[Optional[str], typer.Option(
        help="compression rates to run instead of the profile's, comma-separated (e.g. 16,4)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan, run nothing")] = False,
    only_report: Annotated[bool, typer.Option(help="rebuild the report from finished evaluations and the run record")] = False,
    only: Annotated[Optional[str], typer.Option(
        help="run only the steps matching these comma-separated names or globs (e.g. 'build_data,*text_rag_lora'); "
             "the report covers them and the steps its run record already holds")] = None,
) -> None:
    """Run (or resume) the whole reproduction and write the report.

    Every step is a `python -m pipelines.*` subprocess, skipped once its output
    exists. The plan of the quick profile on the bundled SQuAD sample (the
    reported runs use SQuAD v1.1 dev instead):

      clara reproduce --profile quick --squad examples/data/sample_squad.json \\
        --train-articles 3 --dry-run
    """
    if profile not in PROFILES:
        raise typer.BadParameter(f"{profile!r} is not one of {', '.join(PROFILES)}", param_hint="--profile")
    for name, path in (("--squad", squad), ("--eval-squad", eval_squad)):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint=name)
    work_dir = work_dir or Path("runs") / f"repro-{profile}"
    results_dir = results_dir or Path("docs/results/squad-mini") / profile
    recipe = PROFILES[profile]
    if rates is not None:
        recipe = replace(recipe, rates=_parse_rates(rates))
    plan = Plan(squad=squad.resolve(), work_dir=work_dir, recipe=recipe, eval_squad=eval_squad,
                train_articles=train_articles)
    timings_file = work_dir / "timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    selected = _select_steps(plan.steps(), only)
    report_steps = selected if only is not None else None
    args = ["--profile", profile, "--squad", _relative_to_cwd(squad)]
    args += ["--rates", ",".join(map(str, plan.rates))] if rates is not None else []
    args += ["--eval-squad", _relative_to_cwd(eval_squad)] if eval_squad else []
    args += ["--only", only] if only is not None else []
    args += ["--work-dir", _relative_to_cwd(work_dir), "--results-dir", _relative_to_cwd(results_dir)]
    command = shlex.join(["python", "-m", "experiments.reproduce_paper", *args])
    for step in [] if only_report else plan.steps():
        if step.finished:
            typer.echo(f"[{step.name}] done, skipped")
        elif step.name not in selected:
            typer.echo(f"[{step.name}] not selected by --only")
        elif dry_run:
            typer.echo(f"[{step.name}] would run: {shlex.join(step.argv)}")
        else:
            _run_step(step, work_dir / "logs", _timing_recorder(timings, timings_file, step.name))
            _write_results(plan, results_dir, command, timings, report_steps)  # the record gains each step
    if not dry_run:
        typer.echo(f"report: {_write_results(plan, results_dir, command, timings, report_steps)}")


if __name__ == "__main__":
    typer.run(main)
