"""Plot the discriminator's held-out AUROC during the warm-up of several runs, against the judge on the same texts.

Reads RUN/warmup.jsonl (written by `llmgan train` with discriminator.heldout_size) and RUN/config.yaml of each
run; the x axis is D's optimizer updates (warm-up step x discriminator.steps_per_generator_step), so runs
line up by number of updates (not by time: an update of one D can cost far more than another's). A warm-up
that was started again appends to warmup.jsonl; only its last attempt (from the last step-0 row) is drawn.
The judge's value (`judge/heldout_auroc_max`, the strongest `llmgan evaluate` detector on the run's held-out
texts) is a dashed line in the run's colour, drawn once per value (runs that share a held-out set share the
first one's line).

  python bench/plot_warmup.py runs/lmd-warm-reply-lr1e-4 runs/r10-reply-pool \\
      --labels "LM D, fresh samples" "transformer D, pool of 512" -o docs/results/issue14/warmup-teachers.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders with warmup.jsonl")
    ap.add_argument("--labels", nargs="+", help="one label per run (default: the folder names)")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    args = ap.parse_args()
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        ap.error(f"{len(args.runs)} runs but {len(labels)} labels")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    fig, ax = plt.subplots(figsize=(7 + 3 * (len(args.runs) > 3), 4))  # room for the legend beside many runs
    drawn: set = set()
    for i, (run, label) in enumerate(zip(args.runs, labels)):
        run = Path(run)
        rows = [json.loads(x) for x in (run / "warmup.jsonl").read_text().splitlines() if x.strip()]
        starts = [j for j, r in enumerate(rows) if r.get("step") == 0 and not r.get("end_of_warmup")]
        rows = rows[starts[-1]:] if starts else rows  # the last attempt
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        k = max(1, int(cfg["discriminator"]["steps_per_generator_step"]))
        points = [(r["step"] * k, r["discriminator/heldout_auroc"]) for r in rows
                  if "discriminator/heldout_auroc" in r and not r.get("end_of_warmup")]
        colour = f"C{i}"
        ax.plot(*zip(*points), marker="o", ms=3, color=colour, label=label)
        judge = [r for r in rows if "judge/heldout_auroc_max" in r]
        if judge and round(judge[-1]["judge/heldout_auroc_max"], 4) not in drawn:  # runs on one held-out set: once
            value = judge[-1]["judge/heldout_auroc_max"]
            drawn.add(round(value, 4))
            ax.axhline(value, color=colour, ls="--", lw=1,  # the colour of the first run on these texts
                       label=f"judge on {label}'s texts ({judge[-1]['judge/heldout_auroc_max_detector']}): {value:.3f}")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("discriminator updates during the warm-up")
    ax.set_ylabel("held-out AUROC (real vs start-model sample)")
    ax.set_title("Is the teacher at least as strong as the judge?")
    if len(args.runs) > 3:  # beside the axes: inside, it would cover the curves
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
