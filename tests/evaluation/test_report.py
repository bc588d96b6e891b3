"""Report tables and plots from hand-made summaries of two runs."""
from clara_ray.evaluation.report import PLOTS, generation_table, retrieval_table, write_report


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
    for name in PLOTS.values():
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG" and f"({name})" in text
