"""Markdown tables and PNG plots from one or more evaluation summaries (`summary.json`).

Several summaries (one per checkpoint, e.g. compression rates 4/16/32) go into one report:
- generation table: acc / EM / F1 / latency per run, system and setting;
- retrieval table: Recall@k and Precision@k per run and retriever;
- plots: F1 vs compression rate, Recall@k per retriever, latency vs F1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from clara_ray.evaluation.metrics import RETRIEVAL_KS

PLOTS = {"f1_vs_rate": "f1_vs_compression_rate.png", "recall": "recall_at_k.png", "latency": "latency_vs_f1.png"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def generation_table(summaries: Sequence[dict[str, Any]]) -> str:
    lines = ["| run | system | setting | n | acc | EM | F1 | latency (ms/question) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for s in summaries:
        for key, m in s["generation"].items():
            system, _, setting = key.partition("/")
            lines.append(f"| {s['label']} | {system} | {setting} | {m['n']} | {_pct(m.get('acc'))} | "
                         f"{_pct(m.get('em'))} | {_pct(m.get('f1'))} | {1000 * m.get('latency_s', 0):.0f} |")
    return "\n".join(lines)


def retrieval_table(summaries: Sequence[dict[str, Any]]) -> str:
    heads = [f"R@{k}" for k in RETRIEVAL_KS] + [f"P@{k}" for k in RETRIEVAL_KS]
    lines = ["| run | retriever | n | " + " | ".join(heads) + " |", "|---|---|---:|" + "---:|" * len(heads)]
    for s in summaries:
        for name, m in s["retrieval"].items():
            values = [m.get(f"recall@{k}") for k in RETRIEVAL_KS] + [m.get(f"precision@{k}") for k in RETRIEVAL_KS]
            lines.append(f"| {s['label']} | {name} | {m['n']} | " + " | ".join(_pct(v) for v in values) + " |")
    return "\n".join(lines)


def _finish(fig, ax, path: Path, plt, title: str, xlabel: str | None, ylabel: str, legend: bool = True) -> None:
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_f1_vs_rate(summaries, path: Path, plt) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    runs = sorted((s for s in summaries if s.get("compression_rate")), key=lambda s: s["compression_rate"])
    for key in sorted({k for s in runs for k in s["generation"]}):
        points = [(s["compression_rate"], s["generation"][key]["f1"]) for s in runs if key in s["generation"]]
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=key)
    ax.set_xscale("log", base=2)
    _finish(fig, ax, path, plt, "F1 vs compression rate", "compression rate", "F1 (%)")


def _plot_recall(summaries, path: Path, plt) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = [(f"{s['label']} {name}", m) for s in summaries for name, m in s["retrieval"].items()]
    width = 0.8 / max(len(bars), 1)
    for i, (label, m) in enumerate(bars):
        xs = [j + i * width for j in range(len(RETRIEVAL_KS))]
        ax.bar(xs, [100 * m.get(f"recall@{k}", 0) for k in RETRIEVAL_KS], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(RETRIEVAL_KS))], [f"Recall@{k}" for k in RETRIEVAL_KS])
    _finish(fig, ax, path, plt, "Recall@k per retriever", None, "%")


def _plot_latency(summaries, path: Path, plt) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in summaries:
        for key, m in s["generation"].items():
            point = (1000 * m.get("latency_s", 0), 100 * m["f1"])
            ax.scatter(*point)
            ax.annotate(f"{s['label']} {key}", point, fontsize=6)
    _finish(fig, ax, path, plt, "Latency vs accuracy", "latency (ms per question, batched)", "F1 (%)", legend=False)


def write_report(summaries: Sequence[dict[str, Any]], out_dir: str | Path, title: str = "Evaluation",
                 preamble: str = "") -> Path:
    """report.md plus the three PNGs in `out_dir`; returns the Markdown path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    from clara_ray.evaluation.run import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plot_f1_vs_rate(summaries, out / PLOTS["f1_vs_rate"], plt)
    _plot_recall(summaries, out / PLOTS["recall"], plt)
    _plot_latency(summaries, out / PLOTS["latency"], plt)
    runs = "\n".join(f"- {s['label']}: `{s['checkpoint']}` ({s['num_questions']} questions, "
                     f"backbone {s.get('backbone')}, compression rate {s.get('compression_rate')})" for s in summaries)
    text = "\n\n".join(part for part in [
        f"# {title}", preamble, "## Runs", runs,
        "## Answers (acc = cover-EM, EM, F1; SPEC section 8)", generation_table(summaries),
        "## Retrieval over each question's candidates", retrieval_table(summaries),
        "## Plots", "\n".join(f"![{name}]({file})" for name, file in PLOTS.items()),
    ] if part) + "\n"
    path = out / "report.md"
    write_atomic(path, text)
    return path
