"""Would `llmgan select` choose differently if its detector folds were grouped by prompt, as `llmgan evaluate`'s are?

`llmgan select` scores each candidate with `score_for_selection(None, ...)`: without prompts, every (real,
generated) pair is its own fold group. `llmgan evaluate` passes the prompts, so all pairs of one prompt share
a fold and a detector is never tested on a prompt it was trained on. On posts (one pair per prompt) the two are
the same; on TWON replies 250 validation pairs share 183 posts. This script re-scores the samples selection
already wrote (RUN/selection/step-N.jsonl: no sampling, no training, validation only) both ways and prints each
candidate's detector_auroc_max and the step each way would choose.

Usage (2 cores: about 30 s per candidate):
  python bench/selection_grouping.py runs/r12-reply-cap runs/r13-reply-cap-s1 -o out/selection-grouping.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence


def rescore(run: Path, seed: int = 0) -> dict[str, Any]:
    """Both scorings of every candidate of one run's selection, and the step each chooses."""
    from llmgan.evaluation import score_for_selection
    from llmgan.evaluation.reading import read_pairs
    from llmgan.training.selection import choose

    sel = json.loads((run / "selection" / "selection.json").read_text())
    rows = []
    for c in sel["candidates"]:
        prompts, real, gen = read_pairs(run / "selection" / f"step-{c['step']}.jsonl")
        by_pair = score_for_selection(None, real, gen, seed=seed, threads=1)
        by_prompt = score_for_selection(prompts, real, gen, seed=seed, threads=1)
        rows.append({"step": c["step"], "by_pair": by_pair["detector_auroc_max"],
                     "by_prompt": by_prompt["detector_auroc_max"], "shipped": c["detector_auroc_max"],
                     "prompts": len(set(prompts)), "pairs": len(prompts)})
        print(f"{run}: step {c['step']}: by pair {rows[-1]['by_pair']:.3f} "
              f"(selection.json {c['detector_auroc_max']:.3f}), by prompt {rows[-1]['by_prompt']:.3f}",
              file=sys.stderr, flush=True)
    pick = {k: rows[choose([{"step": r["step"], "detector_auroc_max": r[k]} for r in rows])]["step"]
            for k in ("by_pair", "by_prompt")}
    return {"candidates": rows, "chosen_by_pair": pick["by_pair"], "chosen_by_prompt": pick["by_prompt"],
            "chosen_shipped": sel["selected"]["step"]}


def table(result: dict[str, Any]) -> str:
    lines = ["detector_auroc_max of each candidate on the validation samples selection wrote, detector folds grouped "
             "by pair (as `llmgan select`) / by prompt (as `llmgan evaluate`), and the step each would choose.", "",
             "| run | pairs / prompts | candidates (step: by pair / by prompt) | chosen by pair | chosen by prompt |",
             "| --- | --- | --- | ---: | ---: |"]
    for run, r in result.items():
        c0 = r["candidates"][0]
        cells = "; ".join(f"{c['step']}: {c['by_pair']:.3f} / {c['by_prompt']:.3f}" for c in r["candidates"])
        lines.append(f"| {Path(run).name} | {c0['pairs']} / {c0['prompts']} | {cells} | {r['chosen_by_pair']} | "
                     f"{r['chosen_by_prompt']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders with a finished selection/")
    p.add_argument("--seed", type=int, default=0, help="the detectors' fold seed (llmgan select uses 0)")
    p.add_argument("-o", "--output", help="write the result as JSON here (and a Markdown table beside it)")
    args = p.parse_args(argv)
    result = {run: rescore(Path(run), args.seed) for run in args.runs}
    md = table(result)
    print(md)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        Path(args.output).with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
