"""The reproduction plan: step order, chaining of checkpoints, and resume by output markers."""
from pathlib import Path

import typer
from typer.testing import CliRunner

from experiments.reproduce_paper import Plan, main


def test_plan_chains_stages_and_rates(tmp_path):
    plan = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, rates=[16, 4])
    names = [s.name for s in plan.steps()]
    assert names == ["build_data",
                     "train_cr16_compress_pretrain", "train_cr16_instruct", "train_cr16_end_to_end", "evaluate_cr16",
                     "train_text_rag_lora", "evaluate_text_rag_lora",
                     "train_cr4_compress_pretrain", "train_cr4_instruct", "train_cr4_end_to_end", "evaluate_cr4"]
    steps = {s.name: s for s in plan.steps()}
    assert "model.compression_rate=4" in steps["train_cr4_compress_pretrain"].argv
    assert f"init_from={plan.export_dir(4, 'instruct')}" in steps["train_cr4_end_to_end"].argv
    evaluate = steps["evaluate_cr16"].argv
    assert f"checkpoint={plan.export_dir(16, 'end_to_end')}" in evaluate
    assert "data.article_range=[28,36]" in evaluate  # evaluation articles are never trained on
    # the text-RAG LoRA baseline trains on the same stage-2 data and is scored on the same questions
    lora_eval = steps["evaluate_text_rag_lora"].argv
    assert str(tmp_path.resolve() / "data" / "instruction_data.jsonl") in steps["train_text_rag_lora"].argv
    assert [a for a in lora_eval if a.startswith("data.")] == [a for a in evaluate if a.startswith("data.")]


def test_rerun_skips_finished_steps(tmp_path):
    plan = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, rates=[16])
    for step in plan.steps()[:2]:  # data built, stage 1 exported
        step.done_marker.parent.mkdir(parents=True, exist_ok=True)
        step.done_marker.write_text("{}")
    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--squad", "/data/squad.json", "--work-dir", str(tmp_path),
                                       "--rates", "16", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "[build_data] done, skipped" in result.output
    assert "[train_cr16_compress_pretrain] done, skipped" in result.output
    assert "[train_cr16_instruct] would run" in result.output
