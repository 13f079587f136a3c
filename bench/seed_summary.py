"""Mean and spread of `llmgan evaluate` metrics over seeds: a Markdown table for RESULTS.md.

Usage:
  python bench/seed_summary.py out/r5/eval-sft-adv out/r5/eval-sft-adv-s1 out/r5/eval-sft-adv-s2

Each argument is an evaluation folder (or its metrics.json), or one system of an `llmgan evaluate --compare`
folder as FOLDER:SYSTEM (e.g. out/bon/judge-test:best-4). Prints one row per headline metric with every seed's
value, the mean and the sample standard deviation (n - 1).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from llmgan.evaluation import DETECTORS, METRICS
from llmgan.evaluation.metrics import format_value


def main(paths: list[str]) -> int:
    if len(paths) < 2:
        print(__doc__)
        return 2
    runs = []
    for p in paths:
        folder, _, system = p.rpartition(":") if ":" in p else (p, "", "")
        if system:  # one system of a comparison
            runs.append(json.loads((Path(folder) / "comparison.json").read_text())["systems"][system])
            continue
        f = Path(p) / "metrics.json" if Path(p).is_dir() else Path(p)
        runs.append(json.loads(f.read_text()))
    head = ["metric", *[Path(p.split(":")[0]).parent.name if ":" in p else Path(p).name for p in paths], "mean", "sd"]
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (len(head) - 1))
    rows = [("detector_auroc_max", "Detector AUROC, strongest detector")]
    rows += [(d.metric_key, f"Detector AUROC ({d.label})") for d in DETECTORS.values()]
    rows += [(k, m.label) for k, m in METRICS.items() if m.headline]
    for k, label in rows:
        if not all(r.get(k) is not None for r in runs):
            continue
        vals = [r[k] for r in runs]
        mean, sd = statistics.mean(vals), statistics.stdev(vals)
        scale = 100 if k == "profanity_rate" else 1
        sd_text = f"{scale * sd:.1f}" if k in ("profanity_rate", "mean_words", "length_wasserstein") else f"{sd:.3f}"
        print("| " + " | ".join([label, *[format_value(v, k) for v in vals], format_value(mean, k), sd_text]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
