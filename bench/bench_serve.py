"""Throughput and latency of `llmgan serve` (transformers serve) with continuous batching on and off.

For each mode a server is started as a subprocess on a free localhost port (the embedded default model unless
--model), warmed up with --warmup requests (not timed: the first continuous-batching request builds its cache),
then for each concurrency level C, N requests (default max(2, C)) are sent by C client threads with the `openai`
client, each asking for --max-tokens new tokens of a reply to a demo post (sampling: the served defaults).
Reports requests/s, completion tokens/s and p50/p95 latency per level, as a Markdown table and JSON.

    .venv/bin/python bench/bench_serve.py                      # default model, C = 1, 4, 16, CB on and off
    .venv/bin/python bench/bench_serve.py --concurrency 1 4 --modes off -o bench/results/serve.json
    .venv/bin/python bench/bench_serve.py --model RUN/sft/final/generator --serve-args "--best-of 4 --teacher RUN/teacher"
        # the cost of an answer reranked by the teacher (tokens/s counts the answers' tokens, all draws apart)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "twon_demo.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str | None, cb: bool, log: Path, timeout: float = 600, extra: str = "") -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llmgan", "serve", *([model] if model else []), "--port", str(port),
           "--name", "agent", "--continuous-batching" if cb else "--no-continuous-batching", *shlex.split(extra)]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited ({proc.returncode}); log: {log}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return proc, base
        except OSError:
            time.sleep(1)
    proc.kill()
    sys.exit(f"server not healthy after {timeout} s; log: {log}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def level(client, posts: list[str], concurrency: int, n: int, max_tokens: int) -> dict:
    def one(i: int) -> tuple[float, int, int]:
        t0 = time.perf_counter()
        r = client.chat.completions.create(model="agent", max_tokens=max_tokens,
                                           messages=[{"role": "user", "content": posts[i % len(posts)]}])
        extra = getattr(r, "llmgan", None) or {}  # --best-of: what all draws cost
        return time.perf_counter() - t0, r.usage.completion_tokens, extra.get("completion_tokens_all_draws",
                                                                               r.usage.completion_tokens)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {"concurrency": concurrency, "requests": n, "wall_s": round(wall, 2),
            "all_draws_tokens_per_s": round(sum(r[2] for r in results) / wall, 1),
            "requests_per_s": round(n / wall, 3), "completion_tokens_per_s": round(tokens / wall, 1),
            "mean_completion_tokens": round(tokens / n, 1), "p50_s": round(statistics.median(lat), 2),
            "p95_s": round(lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="what to serve (default: the embedded default model)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=None, help="requests per level (default max(2, C))")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", nargs="+", choices=["on", "off"], default=["off", "on"], help="continuous batching")
    p.add_argument("--serve-args", default="", help='extra llmgan serve arguments, e.g. "--best-of 4 --teacher RUN/teacher"')
    p.add_argument("-o", "--output", default=None, help="JSON file for the results")
    args = p.parse_args()
    from openai import OpenAI

    posts = [json.loads(line)["post"] for line in DEMO.read_text().splitlines()][:64]
    machine = {"serve_args": args.serve_args, "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average_start": os.getloadavg()}
    rows = []
    for mode in args.modes:
        log = Path(f"/tmp/bench_serve_{mode}.log")
        t0 = time.perf_counter()
        proc, base = start(args.model, mode == "on", log, extra=args.serve_args)
        print(f"continuous batching {mode}: server up in {time.perf_counter() - t0:.0f} s ({base})", flush=True)
        try:
            client = OpenAI(base_url=f"{base}/v1", api_key="none", timeout=1800, max_retries=0)
            t0 = time.perf_counter()
            for i in range(args.warmup):
                client.chat.completions.create(model="agent", max_tokens=8,
                                               messages=[{"role": "user", "content": posts[i]}])
            print(f"  warm-up: {args.warmup} requests in {time.perf_counter() - t0:.1f} s", flush=True)
            for c in args.concurrency:
                r = {"continuous_batching": mode, **level(client, posts, c, args.requests or max(2, c),
                                                          args.max_tokens)}
                rows.append(r)
                print("  " + json.dumps(r), flush=True)
                if args.output:  # after every level, so an interrupted run keeps what it measured
                    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.output).write_text(json.dumps({"machine": machine, "max_tokens": args.max_tokens,
                                                             "rows": rows}, indent=2) + "\n")
        finally:
            stop(proc)
    machine["load_average_end"] = os.getloadavg()
    print("\n| continuous batching | concurrency | requests | requests/s | completion tokens/s | all draws' tokens/s | "
          "mean tokens | p50 latency (s) | p95 latency (s) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['continuous_batching']} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']} | "
              f"{r['completion_tokens_per_s']} | {r['all_draws_tokens_per_s']} | {r['mean_completion_tokens']} | "
              f"{r['p50_s']} | {r['p95_s']} |")
    print(f"\nmachine: {machine}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"machine": machine, "max_tokens": args.max_tokens, "rows": rows},
                                                indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
