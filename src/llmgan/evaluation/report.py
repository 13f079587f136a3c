"""Markdown and self-contained HTML reports for `llmgan evaluate` (tables and matplotlib plots).

The HTML has its CSS and its PNG plots inline (base64) and references nothing outside itself, so it
opens offline in any browser; the Markdown links the PNG files written next to it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from llmgan.evaluation import metrics as reg
from llmgan.evaluation.compare import comparison_table, detector_differences, differences_lines, table_entries
from llmgan.evaluation.judge import EvalResult
from llmgan.evaluation.metrics import format_value
from llmgan.io import write_atomic, write_json

PLOT_TITLES = {
    "roc": "Detector ROC curves (out-of-fold)",
    "projection": "MiniLM embeddings, 2-D PCA projection",
    "lengths": "Words per response",
    "sentiment": "VADER compound sentiment",
}
_GEN, _REAL = "#d6604d", "#4393c3"


# ------------------------------------------------------------------------------------------ plots

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def word_bins(*counts, most: int = 40):
    """Histogram edges for integer word counts: at half-integers, one word per bin, or a whole number of words
    per bin when that would make more than `most` bins (so no bin holds more integers than its neighbours)."""
    import numpy as np

    top = int(max([float(np.max(c, initial=0)) for c in counts] + [0.0]))
    width = max(1, -(-(top + 1) // most))
    return np.arange(0, top + width + 1, width) - 0.5


def make_plots(result: EvalResult) -> dict[str, bytes]:
    """PNG bytes of the ROC curve, the 2-D projection and the length and sentiment histograms."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    d, name = result.plots, result.name
    out = {}

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for i, (det_name, ((fpr, tpr), auc)) in enumerate(d["rocs"].items()):
        ax.plot(fpr, tpr, color=_GEN, ls=("-", "--", ":", "-.")[i % 4],
                label=f"{name} vs real, {det_name} (AUROC {auc:.3f})")
    hf, ht = d["human_roc"]
    ax.plot(hf, ht, color=_REAL, label=f"real vs real, {d['best']}, human floor ({d['human_auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    out["roc"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    pr, pg = d["pca_real"], d["pca_generated"]
    ax.scatter(pr[:, 0], pr[:, 1], s=9, alpha=0.55, color=_REAL, label="real", linewidths=0)
    ax.scatter(pg[:, 0], pg[:, 1], s=9, alpha=0.55, color=_GEN, label=name, linewidths=0)
    ax.set(xlabel="PC 1", ylabel="PC 2")
    ax.legend(fontsize=8, markerscale=2)
    out["projection"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    wr, wg = d["words_real"], d["words_generated"]
    bins = word_bins(wr, wg)
    ax.hist(wr, bins=bins, alpha=0.55, color=_REAL, label=f"real (mean {np.mean(wr):.1f})")
    ax.hist(wg, bins=bins, alpha=0.55, color=_GEN, label=f"{name} (mean {np.mean(wg):.1f})")
    ax.set(xlabel="words", ylabel="responses")
    ax.legend(fontsize=8)
    out["lengths"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    bins = np.linspace(-1, 1, 21)
    ax.hist(d["compound_real"], bins=bins, alpha=0.55, color=_REAL, label="real")
    ax.hist(d["compound_generated"], bins=bins, alpha=0.55, color=_GEN, label=name)
    ax.axvspan(-0.05, 0.05, color="grey", alpha=0.15, lw=0)
    ax.set(xlabel="VADER compound (shaded: neutral)", ylabel="responses")
    ax.legend(fontsize=8)
    out["sentiment"] = _png(fig)
    return out


# --------------------------------------------------------------------------------------- tables

def metric_rows(result: EvalResult) -> list[tuple[str, str, str, str, str]]:
    """(label, system value, system at the floor's sample size, human floor, best) per metric, formatted:
    the detectors (each followed by its bootstrap interval when there is one), then the metric registry."""
    m = result.metrics
    same = m.get("same_size_as_floor") or {}
    rows = []
    for k, label, best in table_entries(result, compare_only=False):
        floor = reg.REGISTRY[k].floor if k in reg.REGISTRY else reg.HALVES
        rows.append((label, format_value(m.get(k), k), format_value(same[k], k) if k in same else "",
                     "" if floor == reg.NONE else format_value(m.get(f"human_{k}"), k), best))
        ci = m.get(f"{k}_ci")
        if ci:
            rows.append((f"{label}: {ci['level']:.0%} bootstrap interval",
                         f"{ci['low']:.3f}-{ci['high']:.3f}", "", "", "test-set noise"))
    return rows


def _metric_header(result: EvalResult) -> list[str]:
    half = result.metrics.get("human_floor_half_size")
    return ["metric", result.name, f"{result.name}, {half} vs {half}", "human floor", "best"]


def _md_cell(s: Any) -> str:
    return str(s).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ⏎ ")


def _md_table(header: list[str], rows: list[list[Any]], right: set[int] = frozenset()) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "| " + " | ".join("---:" if i in right else "---" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _clip(s: str, n: int = 280) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _intro(result: EvalResult) -> str:
    m = result.metrics
    h = m["human_floor_half_size"]
    return (f"{m['n_pairs']} prompt/real/generated triples from `{m.get('input', result.name)}`. "
            f"Human floor: the same metric between two disjoint random halves A and B of the real responses "
            f"({h} each); set-level values (mean words, distinct-n, self-BLEU, offensive rate) on all real "
            f"responses. The column \"{h} vs {h}\" compares the generated responses to half B's prompts with "
            f"real half A, the floor's own reference and sample size (Frechet, Wasserstein, JSD and MAUVE "
            f"depend on sample size). Detectors ({', '.join(m['settings'].get('detectors', {}))}): "
            f"{m['settings']['folds']}-fold cross-validated on the same folds, never the training discriminator; "
            f"the headline is the strongest of them ({m.get('detector_auroc_max_detector')}).")


def _worst(result: EvalResult, worst: int, clip: bool) -> tuple[str, list[str], list[list[str]]]:
    """(heading, header, rows) of the most detectable responses, with each detector's score."""
    s = result.samples.head(worst)
    cols = [c for c in s.columns if c.startswith("score_")]
    best = result.metrics.get("detector_auroc_max_detector")
    cut = _clip if clip else (lambda x, n=0: x)
    rows = [[f"{r['detector_score']:.3f}", *[f"{r[c]:.3f}" for c in cols], cut(r["prompt"], 160), cut(r["real"]),
             cut(r["generated"])] for _, r in s.iterrows()]
    heading = f"Most detectable responses (top {min(worst, len(result.samples))} of {len(result.samples)})"
    note = (f"Scores: out-of-fold probability that the response is generated; rows by the strongest detector "
            f"({best}), then each detector's own score. All rows: samples.csv.")
    return heading + "\n" + note, ["score", *[c[len("score_"):] for c in cols], "prompt", "real", "generated"], rows


def render_markdown(result: EvalResult, plot_paths: Mapping[str, str], *, worst: int = 20) -> str:
    m = result.metrics
    parts = [f"# llmgan evaluate: {result.name}", "", _intro(result), ""]
    parts += [f"**Warning:** {w}" + "\n" for w in m.get("warnings", [])]
    parts += ["## Metrics", "",
             _md_table(_metric_header(result), [list(r) for r in metric_rows(result)], right={1, 2, 3}), ""]
    parts += ["## Plots", ""]
    for key, title in PLOT_TITLES.items():
        if key in plot_paths:
            parts += [f"![{title}]({plot_paths[key]})", ""]
    heading, header, rows = _worst(result, worst, clip=True)
    title, note = heading.split("\n")
    parts += [f"## {title}", "", note, "", _md_table(header, rows, right=set(range(len(header) - 3))), ""]
    parts += ["## Method", ""]
    for k, v in m["settings"].items():
        parts.append(f"- **{k}**: {v}")
    parts.append("")
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;vertical-align:top;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.txt{white-space:pre-wrap;max-width:30em;word-break:break-word}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0}
figcaption{font-size:.85em;color:#555;text-align:center}
.note{color:#555;font-size:.92em}
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _html_table(header: list[str], rows: list[list[Any]], classes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="{c}">{html.escape(str(v))}</td>' for v, c in zip(r, classes))
                   + "</tr>\n" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _figures(pngs: Mapping[str, bytes]) -> str:
    """The plots inline (base64 PNG), side by side."""
    figs = [f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
            f'{base64.b64encode(pngs[key]).decode("ascii")}"><figcaption>{html.escape(title)}</figcaption></figure>'
            for key, title in PLOT_TITLES.items() if key in pngs]
    return '<div class="plots">' + "".join(figs) + "</div>"


def render_html(result: EvalResult, pngs: Mapping[str, bytes], *, worst: int = 20) -> str:
    m = result.metrics
    body = [f"<h1>llmgan evaluate: {html.escape(result.name)}</h1>",
            f'<p class="note">{html.escape(_intro(result))}</p>',
            *[f"<p><b>Warning:</b> {html.escape(w)}</p>" for w in m.get("warnings", [])], "<h2>Metrics</h2>",
            _html_table(_metric_header(result), [list(r) for r in metric_rows(result)],
                        ["", "num", "num", "num", ""]),
            "<h2>Plots</h2>", _figures(pngs)]
    heading, header, rows = _worst(result, worst, clip=False)
    title, note = heading.split("\n")
    body += [f"<h2>{html.escape(title)}</h2>", f'<p class="note">{html.escape(note)}</p>',
             _html_table(header, rows, ["num"] * (len(header) - 3) + ["txt"] * 3), "<h2>Method</h2><ul>"]
    body += [f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in m["settings"].items()]
    body.append("</ul>")
    return _page(f"llmgan evaluate: {result.name}", "\n".join(body))


def _compare_rows(table) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in table.columns if c not in ("key",)]
    rows = [[str(r[c]) if c in ("metric", "best") else format_value(r[c], r["key"]) for c in cols]
            for _, r in table.iterrows()]
    return cols, rows


_DIFF_NOTE = ("Paired bootstrap over prompts of the detectors' out-of-fold scores (both systems resampled "
              "together): test-set noise only; the spread between training seeds comes on top.")


_COMPARE_NOTE = ("Each system against the real responses to the same prompts, at the human floor's size: detector "
                 "AUROCs, MAUVE, Frechet, Wasserstein, JSD and the length ratio (which depend on sample size) compare "
                 "each system's generated responses to half B's prompts with real half A, as the floor compares real "
                 "half B with real half A; set-level values (mean words, distinct-n, self-BLEU, offensive rate) use "
                 "all rows. All-rows values, with their bootstrap intervals: comparison.json and each system's "
                 "section below (HTML) or its own `llmgan evaluate` report.")


def _intervals(result: EvalResult) -> list[str]:
    """Each detector's AUROC on all rows with its bootstrap interval, one line each."""
    m = result.metrics
    return [f"{label}: {m[k]:.3f} ({m[k + '_ci']['level']:.0%} interval {m[k + '_ci']['low']:.3f}-"
            f"{m[k + '_ci']['high']:.3f}, {m['n_pairs']} pairs)"
            for k, label, _ in table_entries(result) if m.get(f"{k}_ci") and m.get(k) is not None]


def render_compare_markdown(table, differences=(), results=()) -> str:
    cols, rows = _compare_rows(table)
    right = {i for i, c in enumerate(cols) if c not in ("metric", "best")}
    parts = ["# llmgan evaluate --compare", "", _COMPARE_NOTE, "", _md_table(cols, rows, right), ""]
    if differences:
        parts += [f"## Detector AUROC minus {differences[0]['baseline']}'s", "", _DIFF_NOTE, ""]
        parts += [f"- {line}" for line in differences_lines(differences)] + [""]
    for r in results:
        parts += [f"## {r.name}: detectors on all rows", ""] + [f"- {line}" for line in _intervals(r)] + [""]
    return "\n".join(parts)


def render_compare_html(table, differences=(), results=()) -> str:
    cols, rows = _compare_rows(table)
    classes = ["" if c in ("metric", "best") else "num" for c in cols]
    body = ("<h1>llmgan evaluate --compare</h1>" f'<p class="note">{html.escape(_COMPARE_NOTE)}</p>'
            + _html_table(cols, rows, classes))
    if differences:
        body += (f"<h2>Detector AUROC minus {html.escape(differences[0]['baseline'])}'s</h2>"
                 f"<p class=\"note\">{html.escape(_DIFF_NOTE)}</p><ul>"
                 + "".join(f"<li>{html.escape(line)}</li>" for line in differences_lines(differences)) + "</ul>")
    for r in results:
        body += (f"<h2>{html.escape(r.name)}</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in _intervals(r))
                 + "</ul>" + _figures(make_plots(r)))
    return _page("llmgan evaluate --compare", body)


# ------------------------------------------------------------------------------------------ output

def write_outputs(result: EvalResult, out_dir: str | Path, *, worst: int = 20) -> dict[str, Path]:
    """metrics.json, report.md, report.html, samples.csv and plots/*.png under out_dir (each written atomically)."""
    out = Path(out_dir)
    pngs = make_plots(result)
    paths = {"metrics": write_json(out / "metrics.json", result.metrics)}
    for name, png in pngs.items():
        write_atomic(out / "plots" / f"{name}.png", png)
    paths["markdown"] = write_atomic(out / "report.md", render_markdown(
        result, {k: f"plots/{k}.png" for k in pngs}, worst=worst))
    paths["html"] = write_atomic(out / "report.html", render_html(result, pngs, worst=worst))
    paths["samples"] = write_atomic(out / "samples.csv", result.samples.to_csv(index=False))
    return paths


def write_comparison(results: Sequence[EvalResult], out_dir: str | Path, *, seed: int = 0,
                     differences: Optional[list[dict[str, Any]]] = None) -> dict[str, Path]:
    """comparison.json/.md/.html and each system's samples; `differences` from `detector_differences`
    (computed here when not given)."""
    out = Path(out_dir)
    table = comparison_table(results)
    diffs = detector_differences(results, seed=seed) if differences is None else differences
    paths = {
        "json": write_json(out / "comparison.json", {
            "systems": {r.name: r.metrics for r in results},
            "table": json.loads(table.to_json(orient="records")),
            "detector_auroc_difference_vs_first": diffs}),
        "markdown": write_atomic(out / "comparison.md", render_compare_markdown(table, diffs, results)),
        "html": write_atomic(out / "comparison.html", render_compare_html(table, diffs, results)),
    }
    for r in results:
        write_atomic(out / f"{r.name.replace('/', '_')}.samples.csv", r.samples.to_csv(index=False))
    return paths
