"""Training curves of several runs on one figure: `llmgan plot`.

Each run folder written by `llmgan train` already has plots/ with one figure per metric namespace
(drawn by `plot_metrics` at every save). This command overlays chosen metrics of several runs (seeds
of one recipe, or ablations) so that a reader can judge stability at a glance: one panel per metric,
one colour per run, the raw per-step values faint and a running mean on top.

Reads only RUN/metrics.jsonl (a run still in progress works too); runs on any machine, no model loaded.

Examples:
  llmgan plot runs/sft-adv runs/sft-adv-s1 runs/sft-adv-s2 -o seeds.png
  llmgan plot runs/a runs/b --labels "layer 15" "layer 8" --metrics generator/reward_mean generator/kl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from llmgan.errors import LlmganError
from llmgan.io import atomic_file, check_output_path

DEFAULT_METRICS = ("generator/reward_mean", "discriminator/accuracy", "generator/kl",
                   "generator/completion_length")


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by an interrupted write
                continue
    return rows


def smoothing_window(n: int) -> int:
    """Running-mean window for a curve of n points: none below 20 points, then about n / 10 (at most 25)."""
    return 1 if n < 20 else min(25, max(3, n // 10))


def running_mean(values, window: int) -> list[float]:
    """Trailing running mean [n] -> [n]; the first points average what is there so far. NaN/Inf are skipped."""
    out, buf = [], []
    for v in values:
        buf.append(v)
        if len(buf) > window:
            buf.pop(0)
        finite = [x for x in buf if x == x and abs(x) != float("inf")]
        out.append(sum(finite) / len(finite) if finite else float("nan"))
    return out


def _finish_axes(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _save(fig, axes, used: int, path: Path) -> Path:
    """Hide the unused panels, lay out and write the figure atomically (the format from the suffix)."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=90, format=path.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return path


def plot_metrics(metrics_file: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per metric namespace (discriminator, generator, timing, ...); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_file)
    series: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        step = r.get("step")
        for k, v in r.items():
            if "/" in k and isinstance(v, (int, float)) and step is not None:
                ns, name = k.split("/", 1)
                series[ns][name].append((step, v))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ns, metrics in sorted(series.items()):
        names = sorted(metrics)
        cols = min(3, len(names))
        nrows = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            xs, ys = zip(*metrics[name])
            window = smoothing_window(len(ys))
            if window > 1:  # per-step values are noisy (16 samples a step): raw faint, running mean on top
                ax.plot(xs, ys, lw=0.8, alpha=0.35, color="tab:blue")
                ax.plot(xs, running_mean(ys, window), lw=1.6, color="tab:blue", label=f"mean of {window} steps")
                ax.legend(fontsize=6, loc="best")
            else:
                ax.plot(xs, ys, lw=1.2)
            _finish_axes(ax, f"{ns}/{name}")
        written.append(_save(fig, axes, len(names), out / f"{ns}.png"))
    return written


def plot_runs(metrics_files: Sequence[str | Path], out_file: str | Path, *, labels: Optional[Sequence[str]] = None,
              metrics: Sequence[str] = DEFAULT_METRICS) -> Path:
    """One panel per metric, one line per run (running mean over the faint raw values); returns the PNG path.

    LlmganError names the file when a metrics file is missing or empty, or when no run has a metric.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [Path(f).parent.name for f in metrics_files]
    if len(labels) != len(metrics_files):
        raise LlmganError(f"{len(labels)} labels for {len(metrics_files)} runs; give one label per run")
    runs = []
    for f in metrics_files:
        rows = read_metrics(f)
        if not rows:
            raise LlmganError(f"{f}: no metrics (is it a run folder written by `llmgan train`?)")
        runs.append(rows)
    for m in metrics:
        if not any(m in r for rows in runs for r in rows):
            known = sorted({k for rows in runs for r in rows for k in r if "/" in k})
            raise LlmganError(f"no run has the metric '{m}'; known: {', '.join(known)}")
    cols = min(2, len(metrics))
    nrows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.0 * cols, 3.0 * nrows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes.flat, metrics):
        for i, (rows, label) in enumerate(zip(runs, labels)):
            pts = [(r["step"], r[m]) for r in rows if isinstance(r.get(m), (int, float)) and "step" in r]
            if not pts:
                continue
            xs, ys = zip(*pts)
            c = colours[i % len(colours)]
            window = smoothing_window(len(ys))
            ax.plot(xs, ys, lw=0.7, alpha=0.25 if window > 1 else 1.0, color=c)
            if window > 1:
                ax.plot(xs, running_mean(ys, window), lw=1.6, color=c)
            ax.plot([], [], color=c, lw=1.6, label=label)
        _finish_axes(ax, m + (" (lines: running mean)" if m == metrics[0] else ""))
        ax.legend(fontsize=7)
    return _save(fig, axes, len(metrics), figure_path(out_file))


def plot_selection(result: dict, out_file: str | Path) -> Path:
    """The candidates of `llmgan select` (what RUN/selection/selection.json holds) against their step: the
    strongest detector's AUROC with its 95 % interval (the chosen step starred, the start model's value dashed),
    mean words against the human mean, and relevance. Returns the figure's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = sorted(result["candidates"], key=lambda c: c["step"])
    if not cands:
        raise LlmganError("selection result has no candidates to draw")
    steps = [c["step"] for c in cands]
    chosen = result["selected"]["step"]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.2), squeeze=False)
    ax = axes[0, 0]
    auc = [c["detector_auroc_max"] for c in cands]
    err = [[a - c["detector_auroc_max_low"] for a, c in zip(auc, cands)],
           [c["detector_auroc_max_high"] - a for a, c in zip(auc, cands)]]
    ax.errorbar(steps, auc, yerr=err, marker="o", ms=4, lw=1.2, capsize=3, label="candidate (95 % interval)")
    ax.axhline(auc[0], ls="--", lw=0.8, color="grey", label=f"start model (step {steps[0]})")
    ax.plot([chosen], [result["selected"]["detector_auroc_max"]], marker="*", ms=14, color="tab:red", ls="",
            label=f"chosen: step {chosen}")
    ax.legend(fontsize=7)
    _finish_axes(ax, "detector AUROC, strongest (lower is more human-like)")
    ax = axes[0, 1]
    ax.plot(steps, [c["mean_words"] for c in cands], marker="o", ms=4, lw=1.2, label="generated")
    ax.axhline(cands[0]["human_mean_words"], ls="--", lw=0.8, color="black", label="human")
    ax.legend(fontsize=7)
    _finish_axes(ax, "mean words per response")
    ax = axes[0, 2]
    ax.plot(steps, [c["relevance_cosine"] for c in cands], marker="o", ms=4, lw=1.2)
    _finish_axes(ax, "relevance (paired cosine to the real response)")
    s = result.get("settings", {})
    fig.suptitle(f"selection on {s.get('rows', '?')} '{s.get('split', '?')}' prompts", fontsize=9)
    return _save(fig, axes, 3, figure_path(out_file))


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def figure_path(path: str | Path) -> Path:
    """The figure's real file name: `.png` is added when the name has no suffix (matplotlib would add it
    silently, and the command would print another name than it wrote); other suffixes are refused."""
    p = Path(path)
    if not p.suffix:
        p = p.with_name(p.name + ".png")
    return check_output_path(p, kind="file", suffixes=FIGURE_SUFFIXES, what="figure")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or their metrics.jsonl files)")
    p.add_argument("-o", "--output", required=True, metavar="FIGURE",
                   help="the figure to write (.png, .pdf or .svg; .png is added to a name without a suffix)")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: the folder names)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                   help=f"metrics to draw (default: {' '.join(DEFAULT_METRICS)})")


def run(args: argparse.Namespace) -> int:
    figure_path(args.output)
    files = [Path(r) / "metrics.jsonl" if Path(r).is_dir() else Path(r) for r in args.runs]
    for f in files:
        if not f.is_file():
            raise LlmganError(f"{f}: no such file; give run folders written by `llmgan train`")
    print(f"wrote {plot_runs(files, args.output, labels=args.labels, metrics=args.metrics)}")
    return 0
