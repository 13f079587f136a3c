"""`make demo`: prepare the illustrative demo data, train a short adversarial run with the embedded
default model on this CPU, choose between the start model and the final one on the validation split
(`llmgan select`), and print replies before and after, and where the run folder and plots are.

Bounded to about 10 minutes on 2 CPU cores once the environment is installed. Everything lands in
runs/demo/ (data/, run/). Run it again to start over.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    from llmgan.config import load_config
    from llmgan.data import PrepareOptions, prepare, print_summary
    from llmgan.errors import LlmganError
    from llmgan.training.train import train

    console = Console()
    demo_file = REPO / "data" / "demo" / "twon_demo.jsonl"
    out = REPO / "runs" / "demo"
    t0 = time.perf_counter()
    try:
        console.rule("1. prepare the illustrative demo data (grouped by post)")
        card = prepare(PrepareOptions(inputs=[str(demo_file)], output=str(out / "data"), task="reply",
                                      validation_fraction=0.15, test_fraction=0.15, overwrite=True), console=console)
        print_summary(card, str(out / "data"), console)
        console.rule("2. adversarial training of SmolLM2-135M-Instruct (short run)")
        cfg = load_config(REPO / "configs" / "demo.yaml",
                          [f"data.path={out / 'data'}", f"train.output_dir={out / 'run'}"])
        shutil.rmtree(out / "run", ignore_errors=True)
        run_dir = train(cfg, overwrite=True)
    except LlmganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console.rule("3. replies to held-out posts, before and after")
    import json

    samples = json.loads((run_dir / "samples_before_after.json").read_text())
    table = Table(show_lines=True)
    for col in ("post", "real reply", "before", "after"):
        table.add_column(col, overflow="fold", max_width=40)
    for b, a in zip(samples["before"], samples["after"]):
        table.add_row(b["prompt"][:200], b["real"], b["generated"], a["generated"])
    console.print(table)
    console.print(f"run folder: {run_dir}")
    console.print(f"plots: {', '.join(str(p) for p in sorted((run_dir / 'plots').glob('*.png')))}")
    if (run_dir / "selection" / "selection.md").is_file():
        console.print(f"selection on the validation split: {run_dir / 'selection' / 'selection.md'} "
                      f"(chosen model: {run_dir / 'selected' / 'generator'})")
    console.print(f"metrics: {run_dir / 'metrics.jsonl'}  (TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'})")
    console.print(f"demo took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
