"""Markdown tables and PNG plots from one or more evaluation summaries (`summary.json`).

Several summaries (one per checkpoint, e.g. compression rates 4/16/32) go into one report:
- generation table: acc / EM / F1 / latency per run, system and setting;
- diagnostics table (is memory read?): CLaRa's oracle vs wrong_memory F1, answer CE with own vs
  other memory, stage-1 reconstruction scores (also by position in the paragraph), per run;
- scores by where the answer sits in its gold document, per run and position group;
- retrieval table: Recall@k and Precision@k per run and retriever;
- plots: F1 vs compression rate, Recall@k per retriever, latency vs F1, the diagnostics, F1 by
  answer position.
Reports name checkpoints relative to the working directory, never by absolute machine path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from clara_ray.evaluation.diagnostics import COPIED_RUN
from clara_ray.evaluation.harness import CLOSED, HarnessConfig
from clara_ray.evaluation.metrics import RETRIEVAL_KS
from clara_ray.evaluation.positions import GROUPS, RECALL

PLOTS = {"f1_vs_rate": "f1_vs_compression_rate.png", "recall": "recall_at_k.png", "latency": "latency_vs_f1.png",
         "diagnostics": "diagnostics.png", "positions": "f1_by_answer_position.png"}


def label_problem(label: str) -> str | None:
    """Why `label` cannot name a run in the report's tables (every row starts with it), or None."""
    from clara_ray.unicode import encoding_problem

    if not label.strip():
        return "is blank"
    if "|" in label or "\n" in label or "\r" in label:
        return "holds '|' or a line break, which would split a table row"
    return encoding_problem(label)


DIAGNOSTICS_NOTE = (
    "CLaRa's F1 with the oracle top-k and with `wrong_memory` (the same top-k, each gold document replaced by "
    "another article's), and the teacher-forced cross-entropy of the first gold answer (nats per answer token) "
    "with the oracle memories (own) and the swapped ones (other). Gaps are oracle - wrong_memory and other - own: "
    "both near 0 mean the generator answers without reading its memory. `foreign_memory` replaces all k "
    "documents by other articles' (the rest of wrong_memory's top-k is the question's own article, which may hold "
    "the answer too); its gap is oracle - foreign_memory. Reconstruction: held-out gold paragraphs "
    "regenerated from their memory, against the paragraph cut to doc_max_length tokens (ROUGE-L F1 %, longest "
    "shared word run; SQuAD-normalised words). `-`: not measured.")


COPIED_NOTE = (
    "Which part of a paragraph its memory keeps: the share of the cut paragraph's (normalised) words, by position, "
    f"that its reconstruction copies in a shared run of at least {COPIED_RUN} words.")
POSITION_NOTE = (
    "Questions grouped by the (SQuAD-normalised) words before the first occurrence of a "
    "gold answer in its gold document. A memory that keeps only a document's start answers the first group and "
    "not the later ones; closed book shows how hard each group is without any memory. CE gap: answer CE with other "
    f"minus own memory; R@{max(RETRIEVAL_KS)}: the CLaRa system's retriever over the question's candidates.")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _table(lines: list[str]) -> str:
    """The Markdown table, or "" when it has no rows below its two header lines (nothing evaluated)."""
    return "\n".join(lines) if len(lines) > 2 else ""


def generation_table(summaries: Sequence[dict[str, Any]]) -> str:
    lines = ["| run | system | setting | n | acc | EM | F1 | latency (ms/question) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for s in summaries:
        for key, m in s["generation"].items():
            system, _, setting = key.partition("/")
            lines.append(f"| {s['label']} | {system} | {setting} | {m['n']} | {_pct(m.get('acc'))} | "
                         f"{_pct(m.get('em'))} | {_pct(m.get('f1'))} | {1000 * m.get('latency_s', 0):.0f} |")
    return _table(lines)


def _system(summary: dict[str, Any], kind: str) -> dict[str, Any]:
    """The spec of the run's first system of `kind` (the default harness's systems for a summary
    that does not record its own), or one named after the kind."""
    systems = summary.get("harness", {}).get("systems") or [s.model_dump() for s in HarnessConfig().systems]
    return next((s for s in systems if s["kind"] == kind), {"name": kind, "kind": kind, "retriever": "clara"})


def _clara_system(summary: dict[str, Any]) -> str:
    """The run's (first) CLaRa system name: its rows carry the oracle / wrong_memory F1."""
    return _system(summary, "clara")["name"]


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def diagnostics(summary: dict[str, Any]) -> dict[str, float | None]:
    """The run's memory diagnostics (None where not measured); F1 as fractions, CE in nats."""
    generation, diag = summary["generation"], summary.get("diagnostics", {})
    system = _clara_system(summary)
    f1 = {s: generation.get(f"{system}/{s}", {}).get("f1") for s in ("oracle", "wrong_memory", "foreign_memory")}
    recon, paired = diag.get("reconstruction", {}), summary.get("paired", {})
    return {"oracle_f1": f1["oracle"], "wrong_f1": f1["wrong_memory"], "f1_gap": _gap(f1["oracle"], f1["wrong_memory"]),
            "f1_gap_se": paired.get(f"{system}/f1", {}).get("se"), "foreign_f1": f1["foreign_memory"],
            "foreign_gap": _gap(f1["oracle"], f1["foreign_memory"]),
            "foreign_gap_se": paired.get(f"{system}/f1_foreign", {}).get("se"),
            "ce_own": diag.get("answer_ce_own"), "ce_other": diag.get("answer_ce_other"),
            "ce_gap": _gap(diag.get("answer_ce_other"), diag.get("answer_ce_own")),
            "ce_gap_se": paired.get("answer_ce", {}).get("se"),
            "rouge_l": recon.get("rouge_l_f1_mean"), "longest_run": recon.get("longest_run_words_mean")}


def _has_diagnostics(d: dict[str, float | None]) -> bool:
    return any(d[k] is not None for k in ("wrong_f1", "ce_own", "rouge_l"))


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _nats(value: float | None) -> str:
    return _num(value, 3)


def _gap_cell(gap: float | None, se: float | None, fmt: Callable[[float | None], str]) -> str:
    return fmt(gap) if gap is None or se is None else f"{fmt(gap)} ± {fmt(se)}"


def diagnostics_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Per run with any diagnostic: F1 gap = oracle - wrong_memory (points), CE gap = other - own
    (nats per answer token); both positive when the generator reads its memory. ± is one standard
    error of the per-question differences (summaries written before it was kept have none)."""
    lines = ["| run | oracle F1 | wrong_memory F1 | F1 gap | foreign_memory F1 | F1 gap (foreign) | answer CE own | "
             "answer CE other | CE gap | reconstruction ROUGE-L | longest run (words) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        d = diagnostics(s)
        if not _has_diagnostics(d):
            continue
        lines.append(f"| {s['label']} | {_pct(d['oracle_f1'])} | {_pct(d['wrong_f1'])} | "
                     f"{_gap_cell(d['f1_gap'], d['f1_gap_se'], _pct)} | {_pct(d['foreign_f1'])} | "
                     f"{_gap_cell(d['foreign_gap'], d['foreign_gap_se'], _pct)} | {_nats(d['ce_own'])} | {_nats(d['ce_other'])} | "
                     f"{_gap_cell(d['ce_gap'], d['ce_gap_se'], _nats)} | "
                     f"{_pct(d['rouge_l'])} | {_num(d['longest_run'], 1)} |")
    return "\n".join(lines)


def position_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Per run and answer-position group: the CLaRa system's F1 per setting, closed-book F1, the
    answer CE gap and the Recall@k of the CLaRa system's retriever; "" when no run grouped its questions."""
    lines = ["| run | answer at words | n | normal F1 | oracle F1 | wrong_memory F1 | closed-book F1 | CE gap | "
             f"R@{max(RETRIEVAL_KS)} |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        clara, closed = _system(s, "clara"), _system(s, "closed_book")["name"]
        for group in s.get("by_answer_position", []):
            f1 = group["f1"]
            cells = [f1.get(f"{clara['name']}/{setting}") for setting in ("normal", "oracle", "wrong_memory")]
            cells += [f1.get(f"{closed}/{CLOSED}")]
            recall = group[RECALL].get(clara["retriever"])
            lines.append(f"| {s['label']} | {group['words']} | {group['n']} | " + " | ".join(_pct(v) for v in cells)
                         + f" | {_nats(group['answer_ce_gap'])} | {_pct(recall)} |")
    return _table(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reconstruction_examples(summaries: Sequence[dict[str, Any]]) -> str:
    """The first example of each run that reconstructed paragraphs; empty if none did."""
    rows = [(s["label"], ex[0]) for s in summaries
            if (ex := s.get("diagnostics", {}).get("reconstruction", {}).get("examples"))]
    if not rows:
        return ""
    return "\n".join(["| run | paragraph (start) | reconstruction (start) |", "|---|---|---|"] + [
        f"| {label} | {_cell(ex['paragraph'])} | {_cell(ex['reconstruction'])} |" for label, ex in rows])


def copied_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Per run that reconstructed paragraphs: % of the reference's words copied, by position."""
    runs = [(s["label"], copied) for s in summaries
            if (copied := s.get("diagnostics", {}).get("reconstruction", {}).get("copied_by_position"))]
    lines = ["| run | " + " | ".join(f"copied, words {g}" for g in GROUPS) + " |", "|---|" + "---:|" * len(GROUPS)]
    lines += [f"| {label} | " + " | ".join(_pct(copied.get(g)) for g in GROUPS) + " |" for label, copied in runs]
    return _table(lines)


def retrieval_table(summaries: Sequence[dict[str, Any]]) -> str:
    heads = [f"R@{k}" for k in RETRIEVAL_KS] + [f"P@{k}" for k in RETRIEVAL_KS]
    lines = ["| run | retriever | n | " + " | ".join(heads) + " |", "|---|---|---:|" + "---:|" * len(heads)]
    for s in summaries:
        for name, m in s["retrieval"].items():
            values = [m.get(f"recall@{k}") for k in RETRIEVAL_KS] + [m.get(f"precision@{k}") for k in RETRIEVAL_KS]
            lines.append(f"| {s['label']} | {name} | {m['n']} | " + " | ".join(_pct(v) for v in values) + " |")
    return _table(lines)


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


def _plot_diagnostics(summaries, path: Path, plt) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    runs = [(s["label"], diagnostics(s)) for s in summaries]
    panels = [(left, ("oracle_f1", "oracle"), ("wrong_f1", "wrong_memory"), 100, "F1 (%)",
               "CLaRa F1: gold vs foreign memory"),
              (right, ("ce_own", "own"), ("ce_other", "other"), 1, "nats per answer token",
               "Answer CE: own vs other memory")]
    for ax, (first, first_label), (second, second_label), scale, ylabel, title in panels:
        shown = [(label, d) for label, d in runs if d[first] is not None and d[second] is not None]
        xs = range(len(shown))
        ax.bar([x - 0.2 for x in xs], [scale * d[first] for _, d in shown], 0.4, label=first_label)
        ax.bar([x + 0.2 for x in xs], [scale * d[second] for _, d in shown], 0.4, label=second_label)
        ax.set_xticks(list(xs), [label for label, _ in shown], fontsize=7)
        if shown:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_positions(summaries, path: Path, plt) -> None:
    """CLaRa's oracle F1 per answer-position group, one line per run, closed book dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in summaries:
        clara, closed = _system(s, "clara")["name"], _system(s, "closed_book")["name"]
        groups = [g for g in s.get("by_answer_position", []) if g["words"] in GROUPS]
        for key, style, name in ((f"{clara}/oracle", "-o", "oracle"), (f"{closed}/{CLOSED}", "--", "closed book")):
            points = [(GROUPS.index(g["words"]), 100 * g["f1"][key]) for g in groups if key in g["f1"]]
            if points:
                ax.plot(*zip(*points), style, label=f"{s['label']} {name}")
    ax.set_xticks(range(len(GROUPS)), GROUPS)
    _finish(fig, ax, path, plt, "F1 by where the answer sits in its gold document", "answer at words", "F1 (%)")


def display_path(path: str | None, root: Path) -> str:
    """Relative to `root` when under it, else the last two path parts: no machine paths."""
    if not path:
        return "-"
    p = Path(path)
    if not p.is_absolute():
        return path
    try:
        return os.path.relpath(p, root) if p.resolve().is_relative_to(root.resolve()) else str(Path(*p.parts[-2:]))
    except (OSError, ValueError):
        return str(Path(*p.parts[-2:]))


def write_report(summaries: Sequence[dict[str, Any]], out_dir: str | Path, title: str = "Evaluation",
                 preamble: str = "", root: str | Path | None = None) -> Path:
    """report.md plus the PNGs of PLOTS in `out_dir`; returns the Markdown path. Checkpoints are
    named relative to `root` (default: the working directory)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    from clara_ray.atomic import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_diagnostics = any(_has_diagnostics(diagnostics(s)) for s in summaries)
    # A plot with nothing to draw is left out (a text baseline has no compression rate and no
    # memory diagnostics, runs at one rate no curve over rates, a partial run no evaluation yet),
    # and so is its file from an earlier report in the same directory.
    rates = {s["compression_rate"] for s in summaries if s.get("compression_rate") and s["generation"]}
    plotters = {"f1_vs_rate": _plot_f1_vs_rate if len(rates) > 1 else None,  # one rate: no curve to show
                "recall": _plot_recall if any(s["retrieval"] for s in summaries) else None,
                "latency": _plot_latency if any(s["generation"] for s in summaries) else None,
                "diagnostics": _plot_diagnostics if has_diagnostics else None,
                "positions": _plot_positions if any(s.get("by_answer_position") for s in summaries) else None}
    for name, file in PLOTS.items():
        if plotters[name]:
            plotters[name](summaries, out / file, plt)
        else:
            (out / file).unlink(missing_ok=True)
    drawn = [f"![{name}]({file})" for name, file in PLOTS.items() if plotters[name]]
    root = Path(root) if root is not None else Path.cwd()
    runs = "\n".join(f"- {s['label']}: `{display_path(s.get('checkpoint'), root)}` ({s['num_questions']} questions, "
                     f"backbone {s.get('backbone')}, compression rate {s.get('compression_rate')})" for s in summaries)
    # A section with nothing measured is left out with its heading (e.g. a stage-1 check: no answers).
    answers, retrieval, positions = generation_table(summaries), retrieval_table(summaries), position_table(summaries)
    copied = copied_table(summaries)
    text = "\n\n".join(part for part in [
        f"# {title}", preamble, "## Runs", runs,
        *(["## Answers (acc = cover-EM, EM, F1; docs/design.md section 8)", answers] if answers else []),
        *(["## Diagnostics: is memory read?", DIAGNOSTICS_NOTE, diagnostics_table(summaries),
           reconstruction_examples(summaries)] if has_diagnostics else []),
        *([COPIED_NOTE, copied] if copied else []),
        *(["## Scores by where the answer sits in its gold document", POSITION_NOTE, positions] if positions else []),
        *(["## Retrieval over each question's candidates", retrieval] if retrieval else []),
        *(["## Plots", "\n".join(drawn)] if drawn else []),
    ] if part) + "\n"
    path = out / "report.md"
    write_atomic(path, text)
    return path
