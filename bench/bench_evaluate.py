"""Time `llmgan evaluate` on 1,000 pairs (budget: at most 60 s on a 2-core CPU with the default, linear
detectors; at most 10 minutes for the fine-tuned one), and each detector by itself.

Uses TWON prelim.train from ../shared/data/twon (or $LLMGAN_TWON_DIR): the first N posts with their
real replies, and N other real replies as the "generated" side, written to a JSONL file. Times the
whole command in a fresh process (`llmgan evaluate FILE -o DIR --quiet`: imports, encoder load,
embedding of 3N texts, all metrics and both human floors, reports), then the library call inside one
process with the phases split out, then each detector (--detectors) as `llmgan evaluate` runs it: on
all pairs, on the human floor's two halves and at the floor's size (three fits of 5 folds each).
Skips cleanly (exit 0) when the data is absent.

  .venv/bin/python bench/bench_evaluate.py [--pairs 1000] [--threads 1] [--detectors minilm_lr,ngram_lr,finetuned]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TWON = Path(os.environ.get("LLMGAN_TWON_DIR", REPO.parent / "shared" / "data" / "twon"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="passed to llmgan evaluate --threads")
    ap.add_argument("--detectors", default="all", help="detectors to time one by one (default: all registered)")
    ap.add_argument("--skip-cli", action="store_true", help="only the per-detector timings")
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
    from llmgan.machine import cpu_model

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run")
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "pairs.jsonl"
        with open(f, "w", encoding="utf-8") as out:
            for p, r, g in zip(d.post[:n], d.reply[:n], d.reply[n:2 * n]):
                out.write(json.dumps({"prompt": p, "real": r, "generated": g}, ensure_ascii=False) + "\n")
        if not args.skip_cli:
            time_cli(args, f, tmp, env, n)
        time_detectors(args, f)
    print(f"load average {os.getloadavg()[0]:.1f} after the run")
    return 0


def time_cli(args, f, tmp, env, n) -> None:
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
          f"(detector AUROC max {metrics['detector_auroc_max']:.3f}, MAUVE {metrics['mauve']:.3f})")

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
          f"{t2 - t1:.1f} s, metrics + human floor {t3 - t2:.1f} s (default detectors)")


def time_detectors(args, f) -> None:
    """Each detector as the judge runs it: all n pairs (grouped folds), then the floor (real half B vs A) and
    the same-size comparison (generated B vs real A), n/2 each side."""
    import numpy as np

    from llmgan.evaluation import detectors as det
    from llmgan.evaluation import read_pairs
    from llmgan.evaluation.embed import embed

    prompts, real, gen = read_pairs(f)
    e_real, e_gen = embed(real, threads=args.threads), embed(gen, threads=args.threads)
    n = len(real)
    perm = np.random.default_rng(0).permutation(n)
    a, b = np.sort(perm[:n // 2]), np.sort(perm[n // 2:2 * (n // 2)])
    pick = lambda xs, idx: [xs[i] for i in idx]  # noqa: E731
    for d in det.resolve(args.detectors):
        t0 = time.perf_counter()
        r = det.run_detector(d, gen, real, e_gen, e_real, groups=np.arange(n))
        t1 = time.perf_counter()
        det.run_detector(d, pick(real, b), pick(real, a), e_real[b], e_real[a])
        det.run_detector(d, pick(gen, b), pick(real, a), e_gen[b], e_real[a])
        t2 = time.perf_counter()
        print(f"detector {d.name}: {n} pairs {t1 - t0:.1f} s (AUROC {r['auroc']:.3f}), floor + same-size "
              f"{t2 - t1:.1f} s, total {t2 - t0:.1f} s; load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
