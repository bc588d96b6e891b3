"""The reproduction plan: profiles, step order, chaining of checkpoints, and resume by output markers."""
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from experiments.reproduce_paper import PROFILES, Plan, main, miniature_stages


def _steps(plan):
    return {s.name: s for s in plan.steps()}


def test_full_profile_chains_every_stage_and_rate_with_diagnostics(tmp_path):
    plan = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES["full"])
    names = [s.name for s in plan.steps()]
    per_rate = lambda r: [f"train_cr{r}_compress_windows", f"train_cr{r}_compress_pretrain", f"evaluate_cr{r}_stage1",
                          f"precompress_cr{r}", f"train_cr{r}_instruct_k1", f"train_cr{r}_instruct",
                          f"evaluate_cr{r}_instruct", f"train_cr{r}_retrieval_warmup",
                          f"evaluate_cr{r}_retrieval_warmup", f"train_cr{r}_end_to_end", f"evaluate_cr{r}"]
    assert names == ["build_data", *per_rate(16), *per_rate(4), *per_rate(32), "train_text_rag_lora",
                     "evaluate_text_rag_lora"]
    steps = _steps(plan)
    build = steps["build_data"].argv
    assert "--reconstruction" in build and build[build.index("--reconstruction-window") + 1] == "48"
    # the curriculum: stage 1 on the windows builds the model, stage 1 on the paragraphs continues it
    windows, paragraphs = steps["train_cr4_compress_windows"].argv, steps["train_cr4_compress_pretrain"].argv
    assert f"data.paths=[{tmp_path.resolve() / 'data' / 'pretrain_windows.jsonl'}]" in windows
    assert "model.compression_rate=4" in windows and "model.memory_norm=centered" in windows
    assert not any(a.startswith("model.memory_center_training") for a in windows)  # the running mean
    batch_center = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES["quick-batch-center"])
    assert "model.memory_center_training=batch" in _steps(batch_center)["train_cr16_compress_windows"].argv
    assert not any(a.startswith("model.window_positions") for a in windows)  # the reference: windows on their own
    placed = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES["full-window-positions"])
    assert "model.window_positions=document" in _steps(placed)["train_cr4_compress_windows"].argv
    for arm, placement in (("own", []), ("document", ["model.window_positions=document"]),
                           ("interleaved", ["model.memory_layout=interleaved"])):
        probe = _steps(Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES[f"windows-probe-{arm}"]))
        assert list(probe) == ["build_data", "train_cr4_compress_windows", "evaluate_cr4_stage1"]  # no answers
        assert [a for a in probe["train_cr4_compress_windows"].argv
                if a.startswith(("model.window_positions", "model.memory_layout"))] == placement
        assert "max_steps=120" in probe["train_cr4_compress_windows"].argv
        assert "harness.reconstruction=32" in probe["evaluate_cr4_stage1"].argv
    for profile, first in (("quick-interleaved", "train_cr16_compress_windows"),
                           ("full-interleaved", "train_cr4_compress_windows")):
        interleaved = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES[profile])
        assert {"model.memory_layout=interleaved", "model.memory_center_training=batch"} <= set(
            _steps(interleaved)[first].argv)
    assert f"init_from={plan.export_dir(4, 'compress_windows')}" in paragraphs
    assert "model=null" in paragraphs  # the stage YAML's model fields must not override the loaded model
    assert f"monitor.path={tmp_path.resolve() / 'data' / 'heldout_pretrain_windows.jsonl'}" in windows
    assert "generator_init=previous" in steps["train_cr16_instruct"].argv
    assert "train_compressor=false" in steps["train_cr16_instruct"].argv
    assert f"init_from={plan.export_dir(4, 'retrieval_warmup')}" in steps["train_cr4_end_to_end"].argv
    # the compressor is frozen after stage 1: its store of the training paragraphs feeds every later stage
    precompress = steps["train_cr4_compress_pretrain"], steps["precompress_cr4"]
    assert precompress[1].argv[precompress[1].argv.index("--checkpoint") + 1] == str(plan.export_dir(4, "compress_pretrain"))
    assert str(tmp_path.resolve() / "data" / "corpus.jsonl") in precompress[1].argv
    for later in ("instruct", "retrieval_warmup", "end_to_end"):
        assert f"speed.candidate_store={plan.store_dir(4)}" in steps[f"train_cr4_{later}"].argv
    assert not any("candidate_store" in a for a in precompress[0].argv + steps["train_cr4_compress_windows"].argv)
    evaluate = steps["evaluate_cr16"].argv
    assert f"checkpoint={plan.export_dir(16, 'end_to_end')}" in evaluate
    assert "data.article_range=[28,36]" in evaluate  # evaluation articles are never trained on
    assert "data.per_article=25" in evaluate  # 8 held-out articles x 25 = 200 questions
    assert not any(a.startswith("harness.systems") for a in evaluate)  # the YAML's: wrong_memory, foreign_memory, answer CE
    # the bare backbone's rows (text RAG over MiniLM's top-k, closed book) do not change with the rate
    for rate in (4, 32):
        systems = [a for a in steps[f"evaluate_cr{rate}"].argv if a.startswith("harness.systems=")]
        assert len(systems) == 1 and "wrong_memory, foreign_memory" in systems[0] and "text_rag_clara_topk" in systems[0]
        assert "minilm" not in systems[0] and "closed_book" not in systems[0]
    assert "harness.reconstruction=32" in steps["evaluate_cr16_stage1"].argv
    # the text-RAG LoRA baseline: stage 2's data, as many samples, scored on the same questions
    lora = steps["train_text_rag_lora"].argv
    assert str(tmp_path.resolve() / "data" / "instruction_data.jsonl") in lora
    stage2 = sum(r.steps for r in PROFILES["full"].stages if r.stage == "instruct")  # the k=1 warm-up and k=5
    samples = int(lora[lora.index("--steps") + 1]) * int(lora[lora.index("--batch-size") + 1])
    assert samples == stage2 * 16
    lora_eval = steps["evaluate_text_rag_lora"].argv
    assert [a for a in lora_eval if a.startswith("data.")] == [a for a in evaluate if a.startswith("data.")]


def test_quick_profile_is_cr16_only_and_a_separate_eval_file_replaces_the_held_out_articles(tmp_path):
    plan = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES["quick"],
                eval_squad=Path("/data/other.json"))
    steps = _steps(plan)
    assert not any("cr4" in n or "cr32" in n or "text_rag_lora" in n for n in steps)
    evaluate = steps["evaluate_cr16"].argv
    assert "data.path=/data/other.json" in evaluate and not any("article_range" in a for a in evaluate)
    (systems,) = [a for a in evaluate if a.startswith("harness.systems")]
    assert "wrong_memory" in systems and "foreign_memory" not in systems  # left out for its time budget
    with pytest.raises(ValueError, match="without foreign_memory needs text_rag_systems=False"):
        replace(PROFILES["quick"], text_rag_systems=True)  # its first rate would keep the YAML's foreign_memory
    build = steps["build_data"].argv
    assert "--squad" in build and "/data/squad.json" in build
    assert build[build.index("--use-train-articles") + 1] == "6" and build[build.index("--train-articles") + 1] == "28"


@pytest.mark.parametrize("profile, window_epochs, paragraph_records", [
    ("full-stage1-epoch", 1, 2550),  # one epoch of each file
    ("full-stage1-2epochs", 2, 960),  # two of the windows, a shorter paragraph phase
])
def test_long_stage1_profiles_change_only_stage_1s_length(tmp_path, profile, window_epochs, paragraph_records):
    full, long = PROFILES["full"], PROFILES[profile]
    assert long.rates == (16,) and not long.text_rag_lora
    pairs = list(zip(full.stages, long.stages, strict=True))
    for before, after in pairs:
        assert (before.stage, before.name, before.overrides, before.data) == (after.stage, after.name, after.overrides,
                                                                            after.data)
        assert after.steps == before.steps or after.stage == "compress_pretrain"
    windows, paragraphs = long.stages[0], long.stages[1]
    # the full data has 4,310 windows and 2,550 paragraph records (28 training articles)
    assert window_epochs * 4310 <= windows.steps * 16 < (window_epochs + 1) * 4310
    assert paragraphs.steps * 8 >= paragraph_records
    assert windows.steps > full.stages[0].steps and paragraphs.steps > full.stages[1].steps
    names = [s.name for s in Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=long).steps()]
    assert "evaluate_cr16_stage1" in names and not any("cr4" in n or "text_rag_lora" in n for n in names)


@pytest.mark.parametrize("profile", ["full-stage1-epoch", "full-stage1-2epochs"])
def test_longer_stage2_variant_repeats_the_profiles_stage_2_with_more_steps(tmp_path, profile):
    recipe = PROFILES[profile]
    own = [run for run in recipe.stages if run.stage == "instruct"]
    (variant,) = recipe.stage2_variants
    assert [(r.data, r.overrides) for r in variant.stages] == [(r.data, r.overrides) for r in own]
    assert [r.steps for r in variant.stages] == [2 * r.steps for r in own]
    names = [s.name for s in Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=recipe).steps()]
    trained = [n for n in names if n.startswith(f"train_cr16_{variant.name}_")]
    assert len(trained) == 2 and names.index(trained[-1]) < names.index(f"evaluate_cr16_stage2_{variant.name}")
    assert "evaluate_cr16_stage2" in names  # the profile's own stage 2, evaluated alike
    steps = _steps(Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=recipe))
    for name in ("evaluate_cr16_stage2", f"evaluate_cr16_stage2_{variant.name}"):
        assert any("oracle, wrong_memory, foreign_memory" in a for a in steps[name].argv)


def test_stage2x2_profile_is_stage1_epoch_with_its_variant_as_stage_2():
    base, long = PROFILES["full-stage1-epoch"], PROFILES["full-stage2x2"]
    (variant,) = base.stage2_variants
    fields = lambda runs: [(r.stage, r.steps, r.overrides, r.data, r.label) for r in runs]
    instruct = [r for r in long.stages if r.stage == "instruct"]
    assert fields(instruct) == fields(variant.stages)  # the variant's runs, under the profile's own labels
    assert fields(r for r in long.stages if r.stage != "instruct") == fields(r for r in base.stages if r.stage != "instruct")
    assert not long.stage2_variants and long.rates == base.rates and long.foreign_memory


def test_anneal_profile_adds_a_decaying_stage_1_run_that_the_later_steps_read(tmp_path):
    base, anneal = PROFILES["full-stage1-epoch"], PROFILES["full-stage1-anneal"]
    runs = list(anneal.stages)
    added = runs.pop(2)
    fields = lambda rs: [(r.stage, r.steps, r.overrides, r.data, r.label) for r in rs]
    assert fields(runs) == fields(base.stages) and not anneal.stage2_variants
    assert (added.stage, added.label, added.data_file) == ("compress_pretrain", "compress_anneal", runs[1].data_file)
    assert {"optim.schedule=cosine", "optim.min_lr_ratio=0"} <= set(added.overrides)
    steps = _steps(Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=anneal))
    names = list(steps)
    annealed = tmp_path.resolve() / "runs" / "cr16-compress_anneal" / "model"
    assert f"init_from={tmp_path.resolve() / 'runs' / 'cr16-compress_pretrain' / 'model'}" in steps[
        "train_cr16_compress_anneal"].argv
    # the reconstruction diagnostic, the store and stage 2 all read the annealed compressor
    for name in ("evaluate_cr16_stage1", "precompress_cr16"):
        assert any(str(annealed) in a for a in steps[name].argv)
        assert names.index("train_cr16_compress_anneal") < names.index(name)
    assert f"init_from={annealed}" in steps["train_cr16_instruct_k1"].argv
    assert sum(n.startswith("evaluate_cr16_stage1") for n in names) == 1


def test_stage2_decay_profile_changes_only_stage_2s_lr_schedule(tmp_path):
    base, decay = PROFILES["full-stage1-epoch"], PROFILES["full-stage2-decay"]
    assert [(r.stage, r.steps, r.label) for r in decay.stages] == [(r.stage, r.steps, r.label) for r in base.stages]
    steps, base_steps = (_steps(Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=r))
                         for r in (decay, base))
    for name in ("train_cr16_instruct_k1", "train_cr16_instruct"):
        assert "optim.schedule=cosine" in steps[name].argv and "optim.min_lr_ratio=0" in steps[name].argv
        assert "optim.schedule=constant" not in steps[name].argv
        assert "optim.schedule=constant" in base_steps[name].argv
    # everything else, stage 1 included, runs as in full-stage1-epoch (so its work dir can seed it)
    for name in set(steps) - {"train_cr16_instruct_k1", "train_cr16_instruct"}:
        assert steps[name].argv == base_steps[name].argv, name


def test_rerun_skips_finished_steps_and_unknown_profiles_are_refused(tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text("{}")
    plan = Plan(squad=squad, work_dir=tmp_path, recipe=PROFILES["quick"])
    for step in plan.steps()[:3]:  # data built, both stage-1 runs exported
        step.done_marker.parent.mkdir(parents=True, exist_ok=True)
        step.done_marker.write_text("{}")
    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--squad", str(squad), "--work-dir", str(tmp_path), "--profile", "quick",
                                       "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "[build_data] done, skipped" in result.output
    assert "[train_cr16_compress_windows] done, skipped" in result.output
    assert "[train_cr16_compress_pretrain] done, skipped" in result.output
    assert "[evaluate_cr16_stage1] would run" in result.output
    result = CliRunner().invoke(app, ["--squad", str(squad), "--profile", "huge", "--dry-run"])
    assert result.exit_code == 2 and "huge" in result.output
    # --rates replaces the profile's rates; finished steps of the rates already run are still skipped
    result = CliRunner().invoke(app, ["--squad", str(squad), "--work-dir", str(tmp_path), "--profile", "quick",
                                       "--rates", "16,4", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "[train_cr16_compress_windows] done, skipped" in result.output
    assert "[train_cr4_compress_windows] would run" in result.output and "model.compression_rate=4" in result.output
    for bad in ("4,x", "0"):
        result = CliRunner().invoke(app, ["--squad", str(squad), "--profile", "quick", "--rates", bad, "--dry-run"])
        assert result.exit_code == 2 and "--rates" in result.output


def test_a_zero_step_run_is_left_out_and_stages_1_2_keep_a_flat_lr():
    runs = miniature_stages(5, 0, 3, 2, 1)
    assert [run.label for run in runs] == ["compress_windows", "instruct", "retrieval_warmup", "end_to_end"]
    flat = {run.label for run in runs if "optim.schedule=constant" in run.overrides}
    assert flat == {"compress_windows", "instruct"}


def test_a_k1_warm_up_runs_before_stage_2_on_the_gold_only_file_and_counts_for_the_text_rag_baseline(tmp_path):
    from dataclasses import replace

    recipe = replace(PROFILES["full"], rates=(16,), stages=miniature_stages(5, 2, 3, 2, 1, instruct_k1=4))
    steps = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=recipe).steps()
    names = [s.name for s in steps]
    assert names.index("train_cr16_instruct_k1") == names.index("train_cr16_instruct") - 1
    by_name = {s.name: s for s in steps}
    k1, k5 = by_name["train_cr16_instruct_k1"].argv, by_name["train_cr16_instruct"].argv
    assert any(a.startswith("data.paths=") and a.endswith("instruction_data_k1.jsonl]") for a in k1)
    assert any(a.startswith("init_from=") and a.endswith("cr16-instruct_k1/model") for a in k5)
    lora = by_name["train_text_rag_lora"].argv
    assert lora[lora.index("--steps") + 1] == str((4 + 3) * 16 // 4)  # both stage-2 runs' samples, batch 4


def test_a_steps_time_is_kept_while_it_runs_and_adds_to_earlier_sessions(tmp_path, monkeypatch):
    """A step stopped with the session (or failing) keeps the time it spent; a rerun adds to it."""
    import json
    import sys

    from experiments import reproduce_paper
    from experiments.reproduce_paper import Step, _run_step, _timing_recorder

    monkeypatch.setattr(reproduce_paper, "TIMING_FLUSH_S", 0.2)
    timings_file = tmp_path / "timings.json"
    timings = {"train_x": 5.0}
    record = _timing_recorder(timings, timings_file, "train_x")
    seen = []

    def spent(seconds):
        seen.append(json.loads(timings_file.read_text())["train_x"] if timings_file.exists() else None)
        record(seconds)

    step = Step("train_x", [sys.executable, "-c", "import sys, time; time.sleep(1.2); sys.exit(3)"],
                tmp_path / "never-written")
    with pytest.raises(typer.Exit):
        _run_step(step, tmp_path / "logs", spent)
    assert len(seen) >= 4  # written while the step ran, not only at its end
    total = json.loads(timings_file.read_text())["train_x"]
    assert 5.0 + 1.2 <= total < 5.0 + 10


def test_stage2_variants_branch_from_the_stage1_export_and_are_evaluated_like_the_profiles_stage2(tmp_path):
    plan = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES["quick-ablation"])
    names = [s.name for s in plan.steps()]
    quick = [s.name for s in Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES["quick"]).steps()]
    assert names[:len(quick)] == quick  # a finished quick run in the same work dir is reused as is
    assert names[len(quick):] == ["evaluate_cr16_stage2", "train_cr16_reset_instruct", "evaluate_cr16_stage2_reset",
                                  "train_cr16_k5_only_instruct", "evaluate_cr16_stage2_k5_only"]
    steps = _steps(plan)
    stage1, store = plan.export_dir(16, "compress_pretrain"), plan.store_dir(16)
    reset, k5_only = steps["train_cr16_reset_instruct"].argv, steps["train_cr16_k5_only_instruct"].argv
    for argv in (reset, k5_only):
        assert f"init_from={stage1}" in argv and f"speed.candidate_store={store}" in argv
        assert "train_compressor=false" in argv and "max_steps=20" in argv
        assert any(a.startswith("data.paths=") and a.endswith("instruction_data.jsonl]") for a in argv)
    assert "generator_init=reset" in reset and "generator_init=previous" in k5_only
    strip = lambda argv: [a for a in argv if not a.startswith(("generator_init=", "run.name="))]
    assert strip(k5_only) == strip(reset)  # only the generator's start differs
    # the profile's own stage 2: the same 20 steps, the first 10 on the gold paragraph alone
    own_k1, own_k5 = steps["train_cr16_instruct_k1"].argv, steps["train_cr16_instruct"].argv
    assert f"init_from={stage1}" in own_k1 and "max_steps=10" in own_k1
    assert f"init_from={plan.export_dir(16, 'instruct_k1')}" in own_k5 and "max_steps=10" in own_k5
    evaluations = [steps[n].argv for n in ("evaluate_cr16_stage2", "evaluate_cr16_stage2_reset",
                                            "evaluate_cr16_stage2_k5_only")]
    assert f"checkpoint={plan.export_dir(16, 'instruct')}" in evaluations[0]
    assert f"checkpoint={plan.export_dir(16, 'k5_only_instruct')}" in evaluations[2]
    settings = [[a for a in argv if a.startswith(("harness.", "data."))] for argv in evaluations]
    assert settings[0] == settings[1] == settings[2] and any("wrong_memory" in a for a in settings[0])


def test_the_report_times_only_its_own_profiles_steps_and_says_when_it_is_partial(tmp_path, monkeypatch):
    from experiments.reproduce_paper import Step, _write_results

    plan = Plan(squad=Path("/data/squad.json"), work_dir=tmp_path, recipe=PROFILES["quick"])
    timings = {"build_data": 60.0, "train_cr16_compress_windows": 300.0, "train_cr16_reset_instruct": 600.0}
    report = _write_results(plan, tmp_path / "results", "python -m experiments.reproduce_paper", timings)
    text = Path(report).read_text()
    assert "| train_cr16_compress_windows | 5.0 (unfinished) |" in text  # its time so far, not its time
    assert "reset_instruct" not in text and "0.10 h" in text  # quick-ablation's step is not quick's time
    assert "**Partial: 0 of " in text and "Not finished yet: build_data, train_cr16_compress_windows," in text

    monkeypatch.setattr(Step, "finished", property(lambda step: True))  # every step's output in place
    text = Path(_write_results(plan, tmp_path / "results", "cmd", timings)).read_text()
    assert "Partial" not in text and "| train_cr16_compress_windows | 5.0 |" in text


def test_the_run_record_rebuilds_the_same_report_once_the_work_dir_is_gone(tmp_path, monkeypatch):
    """A machine lost mid-run loses checkpoints and evaluations; the record beside the report keeps
    every finished step, its time and each evaluation's summary, without machine paths."""
    import json
    import shutil

    from experiments.reproduce_paper import RUN_RECORD, _write_results

    monkeypatch.chdir(tmp_path)
    work, results = tmp_path / "work", tmp_path / "results"
    plan = Plan(squad=tmp_path / "squad.json", work_dir=work, recipe=PROFILES["quick"])
    steps = _steps(plan)
    for name in ("build_data", "train_cr16_compress_windows", "evaluate_cr16_stage1"):
        steps[name].done_marker.parent.mkdir(parents=True, exist_ok=True)
        steps[name].done_marker.write_text("{}")
    summary = {"label": "CR=16 stage 1", "checkpoint": str(plan.export_dir(16, "compress_pretrain")),
               "store": None, "data": {"path": str(tmp_path / "squad.json"), "per_article": 5},
               "num_questions": 3, "backbone": "smollm2-135m", "compression_rate": 16, "retrieval": {},
               "generation": {"clara/oracle": {"acc": 0.5, "em": 0.25, "f1": 0.4567, "latency_s": 0.1, "n": 3}}}
    steps["evaluate_cr16_stage1"].done_marker.write_text(json.dumps(summary))
    timings = {"build_data": 60.0, "train_cr16_compress_windows": 300.0, "train_cr16_compress_pretrain": 120.0}
    before = Path(_write_results(plan, results, "cmd", timings)).read_text()
    record = json.loads((results / RUN_RECORD).read_text())
    assert str(tmp_path) not in (results / RUN_RECORD).read_text()
    assert record["summaries"]["evaluate_cr16_stage1"]["checkpoint"] == "work/runs/cr16-compress_pretrain/model"
    assert record["finished"] == ["build_data", "train_cr16_compress_windows", "evaluate_cr16_stage1"]

    shutil.rmtree(work)  # a new machine: no work dir, no timings of its own
    after = Path(_write_results(plan, results, "cmd", {})).read_text()
    assert after == before
    assert "| train_cr16_compress_pretrain | 2.0 (unfinished) |" in after and "| CR=16 stage 1 | clara | oracle | 3 |" in after
    # a step redone there keeps its longer attempt; one finished there joins the record
    steps["build_data"].done_marker.parent.mkdir(parents=True)
    steps["build_data"].done_marker.write_text("{}")
    _write_results(plan, results, "cmd", {"build_data": 30.0, "train_cr16_compress_pretrain": 600.0})
    record = json.loads((results / RUN_RECORD).read_text())
    assert record["timings"]["build_data"] == 60.0 and record["timings"]["train_cr16_compress_pretrain"] == 600.0
    (results / RUN_RECORD).write_text("[1, 2]")
    with pytest.raises(typer.BadParameter, match=RUN_RECORD):
        _write_results(plan, results, "cmd", {})


def test_only_runs_the_selected_steps_and_an_unknown_pattern_is_refused(tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text("{}")
    app = typer.Typer()
    app.command()(main)
    args = ["--squad", str(squad), "--work-dir", str(tmp_path), "--profile", "full", "--dry-run"]
    result = CliRunner().invoke(app, [*args, "--only", "build_data,*text_rag_lora"])
    assert result.exit_code == 0, result.output
    run = [line.split("]")[0][1:] for line in result.output.splitlines() if "would run" in line]
    assert run == ["build_data", "train_text_rag_lora", "evaluate_text_rag_lora"]
    assert "[train_cr16_compress_pretrain] not selected by --only" in result.output
    result = CliRunner().invoke(app, [*args, "--only", "train_cr8_*"])
    assert result.exit_code == 2 and "train_cr8_*" in result.output


def test_a_report_of_selected_steps_lists_those_and_the_recorded_ones(tmp_path):
    from experiments.reproduce_paper import _write_results

    plan = Plan(squad=tmp_path / "squad.json", work_dir=tmp_path / "work", recipe=PROFILES["full"])
    selected = {"build_data", "train_text_rag_lora", "evaluate_text_rag_lora"}
    timings = {"build_data": 60.0, "train_cr4_compress_windows": 120.0}  # the latter from an earlier run
    text = Path(_write_results(plan, tmp_path / "results", "cmd", timings, selected)).read_text()
    assert ("**Partial: 0 of 4 steps finished.** Not finished yet: build_data, train_cr4_compress_windows, "
            "train_text_rag_lora, evaluate_text_rag_lora.") in text
    whole = Path(_write_results(plan, tmp_path / "results", "cmd", timings)).read_text()
    assert f"0 of {len(plan.steps())} steps" in whole
