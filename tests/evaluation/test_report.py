"""Report tables and plots from hand-made summaries of two runs."""
from clara_ray.evaluation.report import (
    PLOTS,
    copied_table,
    diagnostics_table,
    generation_table,
    retrieval_table,
    write_report,
)


def _summary(label, rate, f1):
    return {
        "label": label, "checkpoint": f"runs/{label}", "compression_rate": rate, "backbone": "smollm2-135m",
        "num_questions": 10,
        "generation": {"clara/normal": {"acc": 0.5, "em": 0.25, "f1": f1, "latency_s": 0.1234, "n": 10},
                       "closed_book/closed": {"acc": 0.1, "em": 0.0, "f1": 0.05, "latency_s": 0.02, "n": 10}},
        "retrieval": {"minilm": {"recall@1": 0.4, "precision@1": 0.4, "recall@3": 0.7, "precision@3": 0.7 / 3,
                                 "recall@5": 0.9, "precision@5": 0.18, "n": 10}},
    }


def test_tables_show_percentages_per_run_system_and_setting():
    runs = [_summary("CR=4", 4, 0.4567), _summary("CR=32", 32, 0.3)]
    table = generation_table(runs)
    assert "| CR=4 | clara | normal | 10 | 50.00 | 25.00 | 45.67 | 123 |" in table
    assert "| CR=32 | closed_book | closed | 10 | 10.00 | 0.00 | 5.00 | 20 |" in table
    assert "| CR=4 | minilm | 10 | 40.00 | 70.00 | 90.00 | 40.00 | 23.33 | 18.00 |" in retrieval_table(runs)


def test_write_report_makes_markdown_and_pngs(tmp_path):
    path = write_report([_summary("CR=4", 4, 0.4), _summary("CR=16", 16, 0.35)], tmp_path, title="Mini", preamble="cmd")
    text = path.read_text()
    assert text.startswith("# Mini\n\ncmd\n") and "runs/CR=16" in text
    for key, name in PLOTS.items():
        if key not in ("diagnostics", "positions"):  # none measured here; drawn in the tests below
            assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG" and f"({name})" in text


def test_plots_with_nothing_to_draw_are_left_out_with_their_old_files(tmp_path):
    cr4 = {**_with_diagnostics("CR=4", "runs/cr4"), "compression_rate": 4, "by_answer_position": [
        {"words": "0-29", "n": 3, "f1": {"clara/oracle": 0.5}, "recall@5": {}, "answer_ce_gap": None}]}
    write_report([_with_diagnostics("CR=16", "runs/cr16"), cr4], tmp_path)  # an earlier report: every plot drawn
    assert all((tmp_path / name).exists() for name in PLOTS.values())
    one_rate = write_report([_with_diagnostics("CR=16", "runs/cr16"), _summary("text", None, 0.5)], tmp_path)
    assert f"({PLOTS['f1_vs_rate']})" not in one_rate.read_text() and not (tmp_path / PLOTS["f1_vs_rate"]).exists()
    assert (tmp_path / PLOTS["diagnostics"]).exists()
    baseline = _summary("text-RAG LoRA", None, 0.5)  # a text baseline: no rate, no memory diagnostics
    text = write_report([baseline], tmp_path).read_text()
    for name in ("f1_vs_rate", "diagnostics", "positions"):
        assert f"({PLOTS[name]})" not in text and not (tmp_path / PLOTS[name]).exists()
    for name in ("recall", "latency"):
        assert f"({PLOTS[name]})" in text and (tmp_path / PLOTS[name]).exists()
    no_retrieval = {**baseline, "retrieval": {}}  # e.g. closed book only: answers, no retriever
    text = write_report([no_retrieval], tmp_path).read_text()
    assert f"({PLOTS['recall']})" not in text and not (tmp_path / PLOTS["recall"]).exists()
    assert f"({PLOTS['latency']})" in text
    text = write_report([], tmp_path).read_text()  # a partial run: nothing evaluated yet
    assert "## Plots" not in text and not any((tmp_path / name).exists() for name in PLOTS.values())


def _with_diagnostics(label, checkpoint):
    s = _summary(label, 16, 0.4)
    s["checkpoint"] = checkpoint
    s["generation"]["clara/oracle"] = {"acc": 0.5, "em": 0.3, "f1": 0.45, "latency_s": 0.1, "n": 10}
    s["generation"]["clara/wrong_memory"] = {"acc": 0.1, "em": 0.0, "f1": 0.1234, "latency_s": 0.1, "n": 10}
    s["diagnostics"] = {"answer_ce_own": 1.5, "answer_ce_other": 2.25, "n": 10}
    s["paired"] = {"clara/f1": {"mean": 0.3266, "se": 0.0512, "n": 10}, "answer_ce": {"mean": 0.75, "se": 0.125, "n": 10}}
    return s


def test_diagnostics_table_rows_and_no_absolute_paths(tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    example = {"paragraph": "The Normans | were", "reconstruction": "The"}
    stage1 = {**_summary("stage 1", 16, 0.0), "generation": {}, "retrieval": {},
              "checkpoint": "/elsewhere/runs/cr16-compress_pretrain/model",
              "diagnostics": {"reconstruction": {"n": 4, "rouge_l_f1_mean": 0.625, "longest_run_words_mean": 7.5,
                                                 "examples": [example],
                                                 "copied_by_position": {"0-29": 0.375, "30-59": 0.125}}}}
    runs = [_with_diagnostics("CR=16", str(tmp_path / "runs" / "cr16" / "model")), stage1, _summary("old", 4, 0.3)]
    table = diagnostics_table(runs)
    assert "| CR=16 | 45.00 | 12.34 | 32.66 ± 5.12 | - | - | 1.500 | 2.250 | 0.750 ± 0.125 | - | - |" in table
    assert "| stage 1 | - | - | - | - | - | - | - | - | 62.50 | 7.5 |" in table
    assert "| old |" not in table  # nothing measured: no row
    del runs[0]["paired"]  # a summary written before standard errors were kept
    assert "| CR=16 | 45.00 | 12.34 | 32.66 | - | - | 1.500 | 2.250 | 0.750 | - | - |" in diagnostics_table(runs)
    runs[0]["paired"] = _with_diagnostics("CR=16", "")["paired"]
    runs[0]["generation"]["clara/foreign_memory"] = {"acc": 0.0, "em": 0.0, "f1": 0.05, "latency_s": 0.1, "n": 10}
    runs[0]["paired"]["clara/f1_foreign"] = {"mean": 0.4, "se": 0.0625, "n": 10}
    assert "| CR=16 | 45.00 | 12.34 | 32.66 ± 5.12 | 5.00 | 40.00 ± 6.25 | 1.500 |" in diagnostics_table(runs)
    table = diagnostics_table(runs)
    assert "| CR=16 | clara | wrong_memory | 10 | 10.00 | 0.00 | 12.34 | 100 |" in generation_table(runs)

    text = write_report(runs, tmp_path / "report").read_text()
    assert "## Diagnostics: is memory read?" in text and table in text
    assert text.index("## Answers") < text.index("## Diagnostics") < text.index("## Retrieval")
    assert "| stage 1 | The Normans \\| were | The |" in text  # example, pipe escaped
    assert "| run | copied, words 0-29 | copied, words 30-59 | copied, words 60-99 | copied, words 100+ |" in text
    assert "| stage 1 | 37.50 | 12.50 | - | - |" in text and "| CR=16 |" not in copied_table(runs)  # no reconstruction
    assert "`runs/cr16/model`" in text and "`cr16-compress_pretrain/model`" in text
    assert not re.search(r"(^|[\s`(])/\w", text), "absolute path in report"
    assert (tmp_path / "report" / PLOTS["diagnostics"]).read_bytes()[:4] == b"\x89PNG"
    assert f"({PLOTS['diagnostics']})" in text
    # A stage-1 check alone (reconstruction, no answers, no retriever): only what it measured is shown.
    text = write_report([stage1], tmp_path / "stage1").read_text()
    assert "## Diagnostics" in text and "| stage 1 | - | - | - | - | - | - | - | - | 62.50 | 7.5 |" in text
    assert "## Answers" not in text and "## Retrieval" not in text
    assert f"({PLOTS['diagnostics']})" in text and f"({PLOTS['f1_vs_rate']})" not in text
    assert not (tmp_path / "stage1" / PLOTS["f1_vs_rate"]).exists()


def test_position_table_shows_the_clara_systems_scores_per_answer_position(tmp_path):
    from clara_ray.evaluation.report import position_table

    run = _with_diagnostics("CR=16", "runs/cr16")
    run["harness"] = {"systems": [{"name": "mem", "kind": "clara", "retriever": "minilm"},
                                  {"name": "cb", "kind": "closed_book", "retriever": "clara"}]}
    run["by_answer_position"] = [
        {"words": "0-29", "n": 6, "f1": {"mem/normal": 0.5, "mem/oracle": 0.625, "mem/wrong_memory": 0.125,
                                        "cb/closed": 0.05, "clara/oracle": 0.99},
         "recall@5": {"minilm": 0.875, "clara": 0.1}, "answer_ce_gap": 1.25},
        {"words": "100+", "n": 4, "f1": {"mem/oracle": 0.1}, "recall@5": {}, "answer_ce_gap": None}]
    table = position_table([run, _summary("old", 4, 0.3)])
    assert "| CR=16 | 0-29 | 6 | 50.00 | 62.50 | 12.50 | 5.00 | 1.250 | 87.50 |" in table
    assert "| CR=16 | 100+ | 4 | - | 10.00 | - | - | - | - |" in table
    assert "| old |" not in table and position_table([_summary("old", 4, 0.3)]) == ""
    text = write_report([run], tmp_path).read_text()
    assert table in text and text.index("## Diagnostics") < text.index(table) < text.index("## Retrieval")
    assert text.index("## Scores by where the answer sits in its gold document") < text.index(table)
    assert (tmp_path / PLOTS["positions"]).read_bytes()[:4] == b"\x89PNG" and f"({PLOTS['positions']})" in text
    assert "answer at words" not in write_report([_summary("old", 4, 0.3)], tmp_path).read_text()


def _saved(directory, summary):
    import json

    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    return str(directory)


def test_clara_report_puts_finished_evaluations_side_by_side(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    cr4 = _saved(tmp_path / "eval-cr4", _with_diagnostics("CR=4", "runs/cr4/model") | {"compression_rate": 4})
    cr16 = _saved(tmp_path / "eval-cr16", _with_diagnostics("CR=16", "runs/cr16/model"))
    result = CliRunner().invoke(app, ["report", cr4, f"{cr16}/summary.json", "--out", str(tmp_path / "both"),
                                      "--label", "epoch CR 4", "--label", "epoch CR 16", "--title", "Rates",
                                      "--preamble", "Two runs."])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "both" / "report.md").read_text()
    assert text.startswith("# Rates\n\nTwo runs.\n")
    assert "| epoch CR 4 | clara | oracle | 10 |" in text and "| epoch CR 16 | clara | oracle | 10 |" in text
    assert (tmp_path / "both" / PLOTS["f1_vs_rate"]).read_bytes()[:4] == b"\x89PNG"


def test_clara_report_refuses_what_it_cannot_tell_apart_or_read(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    a = _saved(tmp_path / "a", _summary("CR=16", 16, 0.4))
    b = _saved(tmp_path / "b", _summary("CR=16", 16, 0.3))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "summary.json").write_text('{"label": "x", "gen')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.json").write_text('{"label": "x"}')
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "summary.json").write_text("[1, 2]")
    _saved(tmp_path / "surrogate", _summary("CR=\ud800", 4, 0.4))  # json.dumps escapes it: valid JSON
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    no_f1 = _summary("CR=4", 4, 0.4)
    del no_f1["generation"]["clara/normal"]["f1"]
    _saved(tmp_path / "no_f1", no_f1)
    cases = [([a, b], [f"{b} and {a} are both labelled 'CR=16'", "--label"]),
             ([a, b, "--label", "only one"], ["--label given 1 times for 2 evaluations"]),
             ([a, str(tmp_path / "torn")], ["torn/summary.json", "not a JSON evaluation summary"]),
             ([str(tmp_path / "other")], ["other/summary.json", "field num_questions: Field required"]),
             ([str(tmp_path / "list")], ["list/summary.json", "field (top level)"]),
             ([str(tmp_path / "no_f1")], ["no_f1/summary.json", "field generation.clara/normal.f1"]),
             ([a, "--label", "CR | 16"], [f"{a}: label 'CR | 16' would break the report's tables"]),
             ([a, "--label", " "], [f"{a}: label ' '"]),
             ([a, "--label", "CR \udcff"], [f"{a}: label 'CR \\\\udcff'", "not Unicode text"]),
             ([str(tmp_path / "surrogate")], ["surrogate/summary.json", "lone surrogate U+D800"]),
             ([str(tmp_path / "deep")], ["deep/summary.json", "nested too deeply"])]
    for argv, expected in cases:
        result = CliRunner().invoke(app, ["report", *argv, "--out", str(tmp_path / "r")])
        assert result.exit_code == 2, result.output
        for part in expected:
            assert part in result.stderr, (part, result.stderr)
    assert not (tmp_path / "r").exists()  # nothing written
