"""Reproduce the paper's claims in miniature on SQuAD: data -> 3 training stages -> evaluation.

    python -m experiments.reproduce_paper --squad ../shared/data/squad/squad-v1.1-dev-part-a.json \
        --work-dir runs/repro --results-dir docs/results/squad-mini --rates 16,4,32

Every step goes through the same entry points `ray job submit` uses (`python -m pipelines.*`,
run as subprocesses) and is skipped when its output exists, so a run cut off at a session's end
resumes in the next: finished steps are not redone, and the interrupted step resumes on its own
(training from its last Ray Train checkpoint, evaluation from its partial predictions).
Step timings accumulate in <work-dir>/timings.json; the combined report (Markdown + PNG) lands
in --results-dir with the command and the CPU time each step took.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

STAGES = ("compress_pretrain", "instruct", "end_to_end")
STAGE_DATA = {"compress_pretrain": "pretrain_data.jsonl", "instruct": "instruction_data.jsonl",
              "end_to_end": "end_to_end_data.jsonl"}


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
    rates: list[int]
    train_articles: int = 28
    total_articles: int = 36
    doc_max_length: int = 128
    steps_per_stage: tuple[int, int, int] = (50, 50, 40)
    eval_per_article: int = 15
    max_candidates: int = 20

    def export_dir(self, rate: int, stage: str) -> Path:
        return (self.work_dir / "runs" / f"cr{rate}-{stage}" / "model").resolve()

    def eval_dir(self, rate: int) -> Path:
        return self.eval_dir_named(f"cr{rate}")

    def eval_dir_named(self, name: str) -> Path:
        return (self.work_dir / "eval" / name).resolve()

    def steps(self) -> list[Step]:
        data = (self.work_dir / "data").resolve()
        python = sys.executable
        steps = [Step("build_data", [python, "-m", "pipelines.build_squad_data", "--squad", str(self.squad),
                                     "--out", str(data), "--train-articles", str(self.train_articles)],
                      data / STAGE_DATA["end_to_end"])]
        for rate in self.rates:
            previous: Path | None = None
            for stage, max_steps in zip(STAGES, self.steps_per_stage):
                export = self.export_dir(rate, stage)
                argv = [python, "-m", "pipelines.train", "--stage", stage, "--config", f"configs/train/cpu/{stage}.yaml",
                        f"data.paths=[{data / STAGE_DATA[stage]}]", f"max_steps={max_steps}",
                        f"run.name=cr{rate}-{stage}", f"run.storage_path={(self.work_dir / 'runs').resolve()}"]
                if previous is None:
                    argv += [f"model.compression_rate={rate}", f"model.doc_max_length={self.doc_max_length}"]
                else:
                    argv += [f"init_from={previous}"]
                steps.append(Step(f"train_cr{rate}_{stage}", argv, export / "clara_config.json"))
                previous = export
            out = self.eval_dir(rate)
            steps.append(Step(f"evaluate_cr{rate}", [
                python, "-m", "pipelines.evaluate", "--config", "experiments/configs/eval_squad_cpu.yaml",
                f"checkpoint={previous}", f"output_dir={out}", f"label=CR={rate}", f"data.path={self.squad}",
                f"data.article_range=[{self.train_articles},{self.total_articles}]",
                f"data.per_article={self.eval_per_article}", f"data.max_candidates={self.max_candidates}",
            ], out / "summary.json"))
            if rate == self.rates[0]:
                steps += self._text_rag_lora_steps(data)
        return steps

    def _text_rag_lora_steps(self, data: Path) -> list[Step]:
        """The LoRA text-RAG baseline: same stage-2 data, documents read as text."""
        python = sys.executable
        checkpoint = (self.work_dir / "text_rag_lora").resolve()
        out = self.eval_dir_named("text_rag_lora")
        system = "[{name: text_rag_lora, kind: text_rag, retriever: minilm, adapter: generator}]"
        return [
            Step("train_text_rag_lora", [python, "-m", "experiments.text_rag_lora", "--data",
                                         str(data / STAGE_DATA["instruct"]), "--out", str(checkpoint),
                                         "--steps", str(self.steps_per_stage[1])], checkpoint / "text_rag_lora.json"),
            Step("evaluate_text_rag_lora", [
                python, "-m", "pipelines.evaluate", "--config", "experiments/configs/eval_squad_cpu.yaml",
                f"checkpoint={checkpoint}", f"output_dir={out}", "label=text-RAG LoRA", f"data.path={self.squad}",
                f"data.article_range=[{self.train_articles},{self.total_articles}]",
                f"data.per_article={self.eval_per_article}", f"data.max_candidates={self.max_candidates}",
                f"harness.systems={system}", "harness.retrievers=[minilm]",
            ], out / "summary.json"),
        ]


def _run_step(step: Step, log_dir: Path) -> float:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{step.name}.log"
    typer.echo(f"[{step.name}] {shlex.join(step.argv)}\n  log: {log}")
    start = time.perf_counter()
    with log.open("a") as fh:
        code = subprocess.call(step.argv, stdout=fh, stderr=subprocess.STDOUT)
    if code != 0 or not step.finished:
        typer.echo(f"step '{step.name}' failed (exit {code}); see {log}. Rerun the same command to resume.", err=True)
        raise typer.Exit(1)
    return time.perf_counter() - start


def _write_results(plan: Plan, results_dir: Path, command: str, timings: dict[str, float]) -> Path:
    from clara_ray.evaluation.report import write_report

    dirs = [plan.eval_dir(r) for r in plan.rates] + [plan.eval_dir_named("text_rag_lora")]
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs if (d / "summary.json").exists()]
    lines = [f"Command: `{command}`", "",
             f"Total wall time of all steps (summed over sessions): {sum(timings.values()) / 3600:.2f} h", "",
             "| step | wall time (min) |", "|---|---:|"]
    lines += [f"| {name} | {seconds / 60:.1f} |" for name, seconds in timings.items()]
    return write_report(summaries, results_dir, title="CLaRa in miniature: SQuAD, SmolLM2-135M, CPU",
                        preamble="\n".join(lines))


def main(
    squad: Annotated[Path, typer.Option(help="SQuAD v1.1 JSON (split by article into train / evaluation)")],
    work_dir: Annotated[Path, typer.Option(help="data, checkpoints, evaluations, timings")] = Path("runs/repro"),
    results_dir: Annotated[Path, typer.Option(help="where the combined report goes")] = Path("docs/results/squad-mini"),
    rates: Annotated[str, typer.Option(help="compression rates, in order of priority")] = "16,4,32",
    train_articles: Annotated[int, typer.Option(help="first N articles train, the rest evaluate")] = 28,
    steps_per_stage: Annotated[str, typer.Option(help="max optimizer steps for stages 1,2,3")] = "50,50,40",
    eval_per_article: Annotated[int, typer.Option(help="evaluation questions per held-out article")] = 15,
    dry_run: Annotated[bool, typer.Option(help="print the plan, run nothing")] = False,
    only_report: Annotated[bool, typer.Option(help="rebuild the report from finished evaluations")] = False,
) -> None:
    """Run (or resume) the whole reproduction and write the report."""
    s1, s2, s3 = (int(x) for x in steps_per_stage.split(","))
    plan = Plan(squad=squad.resolve(), work_dir=work_dir, rates=[int(r) for r in rates.split(",")],
                train_articles=train_articles, steps_per_stage=(s1, s2, s3), eval_per_article=eval_per_article)
    timings_file = work_dir / "timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for step in [] if only_report else plan.steps():
        if step.finished:
            typer.echo(f"[{step.name}] done, skipped")
            continue
        if dry_run:
            typer.echo(f"[{step.name}] would run: {shlex.join(step.argv)}")
            continue
        timings[step.name] = timings.get(step.name, 0.0) + _run_step(step, work_dir / "logs")
        work_dir.mkdir(parents=True, exist_ok=True)
        timings_file.write_text(json.dumps(timings, indent=2))
    if not dry_run:
        command = shlex.join(["python", "-m", "experiments.reproduce_paper", *sys.argv[1:]])
        typer.echo(f"report: {_write_results(plan, results_dir, command, timings)}")


if __name__ == "__main__":
    typer.run(main)
