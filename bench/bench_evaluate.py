"""Time `llmgan evaluate` on 1,000 pairs (the issue's budget: at most 60 s on a 2-core CPU).

Uses TWON prelim.train from ../shared/data/twon (or $LLMGAN_TWON_DIR): the first N posts with their
real replies, and N other real replies as the "generated" side, written to a JSONL file. Times the
whole command in a fresh process (`llmgan evaluate FILE -o DIR --quiet`: imports, encoder load,
embedding of 3N texts, all metrics and both human floors, reports), then the library call inside one
process with the phases split out. Skips cleanly (exit 0) when the data is absent.

  .venv/bin/python bench/bench_evaluate.py [--pairs 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TWON = Path(os.environ.get("LLMGAN_TWON_DIR", REPO.parent / "shared" / "data" / "twon"))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="passed to llmgan evaluate --threads")
    args = ap.parse_args()
    src = TWON / "prelim.train.parquet"
    if not src.is_file():
        print(f"skipped: TWON data not found at {src} (set LLMGAN_TWON_DIR)")
        return 0
    import pandas as pd

    d = pd.read_parquet(src)
    n = args.pairs
    if len(d) < 2 * n:
        print(f"skipped: {src} has {len(d)} rows, need {2 * n}")
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run")
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "pairs.jsonl"
        with open(f, "w", encoding="utf-8") as out:
            for p, r, g in zip(d.post[:n], d.reply[:n], d.reply[n:2 * n]):
                out.write(json.dumps({"prompt": p, "real": r, "generated": g}, ensure_ascii=False) + "\n")
        import resource

        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "llmgan", "evaluate", str(f), "-o", str(Path(tmp) / "eval"), "--quiet"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        cli = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        metrics = json.loads((Path(tmp) / "eval" / "metrics.json").read_text())
        print(f"llmgan evaluate, {n} pairs, --threads {args.threads or 'default'}, fresh process: "
              f"{cli:.1f} s wall, {cpu:.1f} s CPU (user+sys), load average {load0:.1f} -> {os.getloadavg()[0]:.1f} "
              f"(detector AUROC {metrics['detector_auroc']:.3f}, MAUVE {metrics['mauve']:.3f})")

        os.environ.update(env)
        from llmgan import evaluation as ev
        from llmgan.evaluation.embed import embed, load_encoder

        t0 = time.perf_counter()
        load_encoder()
        t1 = time.perf_counter()
        prompts, real, gen = ev.read_pairs(f)
        embed(prompts + real + gen, threads=args.threads)
        t2 = time.perf_counter()
        ev.run_evaluation(prompts, real, gen)  # embeddings cached: metrics, floors, projection only
        t3 = time.perf_counter()
        print(f"in-process: encoder load {t1 - t0:.1f} s, embedding {len(set(prompts + real + gen))} distinct texts "
              f"{t2 - t1:.1f} s, metrics + human floor {t3 - t2:.1f} s")
    print(f"load average {os.getloadavg()[0]:.1f} after the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
