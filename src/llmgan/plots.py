"""PNG plots of a run's metrics (metrics.jsonl -> plots/*.png), one figure per namespace."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


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
            ax.set_title(f"{ns}/{name}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        path = out / f"{ns}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
