"""Step-time benchmarks of `llmgan train` (TRL GRPOTrainer + discriminator reward) on the CPU.

Every trainer is built through llmgan.training.components.build_components, exactly as `llmgan train`
builds it, on the default model
(`model.name=null`: SmolLM2-135M-Instruct) and the recipe of configs/twon-reply.yaml (4 prompts x 4
generations, 48 new tokens, layer-15 features of the frozen reference, prompt-conditioned, k=2 D
updates, replay 64), with the discriminator warm-up off (only generator steps are timed).

Modes (`--mode`, default `all`):
  overhead   the adversarial step vs the same trainer with a constant reward (discriminator overhead),
             side by side: one step of each in turn, same prompts for both in each pair
  prototype  the adversarial step vs the earlier prototype's design (`train.objective=embedding`:
             the generator encodes its own responses with gradient), both bf16, same shapes, in turn
  encode     the discriminator's encoding pass: early exit at layer 15 without the LM head (what
             llmgan does) vs the full decoder vs the full model with the LM head, same batch
  grid       step time and peak memory for prompts per step (4, 8, 16), generations per prompt (2, 4,
             8) and completion length (32, 64, 128), one factor at a time around 4 x 4 x 64, each
             cell in a fresh process (so its peak RSS is its own), completions forced to full length
  all        all of the above, then BENCHMARKS-style tables (markdown) and the grid plot

Each step is one `trainer.train()` call with max_steps=1 on a trainer kept in memory (its LoRA
weights carry over); `args.seed` changes per pair so the pairs see different prompts and both sides of
a pair the same ones. Figures: s/step (callback from step begin to step end: generation, scoring,
forward/backward, optimizer), samples/s, the per-phase timings the trainer logs (timing/generate,
timing/encode, timing/discriminator, timing/reference, timing/update), and peak RSS (VmHWM from
/proc/self/status, reset before each step through /proc/self/clear_refs; "peak" is the whole process).

For stable ratios on a shared machine run it pinned to one core with one thread:
  OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python bench/bench_step.py --out bench/results/cpu
The load average and thread count are recorded with every result.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "twon-reply.yaml"
TWON_TRAIN = REPO.parent / "shared" / "data" / "twon" / "prelim.train.parquet"
DEMO_FILE = REPO / "data" / "demo" / "twon_demo.jsonl"
PROTOTYPE = {"seconds_per_step": 11.3, "samples_per_step": 16, "max_new_tokens": 48, "dtype": "bfloat16",
             "samples_per_s": 16 / 11.3, "source": "the earlier prototype on this CPU (figure given in the issue, not re-measured)"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------------------------------------
# Machine facts and memory


def _proc_status(key: str) -> float:
    """A kB field of /proc/self/status in MB (nan when unreadable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not supported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    v = _proc_status("VmHWM")
    if v == v:
        return v
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return _proc_status("VmRSS")


def machine() -> dict:
    import torch

    from llmgan.machine import cpu_model

    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "host_cpu": cpu_model(),
            "cores_visible": os.cpu_count(), "affinity": affinity, "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "python": platform.python_version(), "loadavg_start": list(os.getloadavg())}


# ---------------------------------------------------------------------------------------------
# Data and config


def prepared_data(path: str | None) -> str:
    """A `llmgan prepare` folder: the given one, else /tmp/bench-data from the TWON train file (or the demo file)."""
    if path:
        return path
    out = Path(tempfile.gettempdir()) / "bench-data"
    if not (out / "card.json").exists() and not any(out.glob("*")):
        from llmgan.data import PrepareOptions, prepare

        src = TWON_TRAIN if TWON_TRAIN.is_file() else DEMO_FILE
        prepare(PrepareOptions(inputs=[str(src)], output=str(out), task="reply"))
    return str(out)


def make_cfg(args, *extra: str):
    from llmgan.config import load_config

    return load_config(args.config, [
        f"data.path={args.data}", f"model.name={args.model}", f"train.output_dir={args.tmp}/run", "discriminator.warmup_steps=0",
        "train.sample_every=0", "train.save_every=1000000", "train.steps=1", "train.sft_warm_start=false",
        f"train.prompts_per_step={args.prompts}", f"generation.num_generations={args.generations}",
        f"generation.max_new_tokens={args.tokens}", f"model.dtype={args.dtype}", *extra, *args.set])


def constant_reward(prompts, completions, **kwargs):
    """Reward 0 for every completion (advantages are zero, the loss and its backward still run)."""
    return [0.0] * len(completions)


constant_reward.__name__ = "constant"


# ---------------------------------------------------------------------------------------------
# A trainer stepped one step at a time


class Stepper:
    """A GRPO trainer built like `llmgan train` builds it, stepped with one `train()` call per step."""

    def __init__(self, cfg, reward: str, force_length: bool = False, cache_features: bool = True):
        import dataclasses

        import torch
        from transformers import TrainerCallback

        from llmgan.training.components import build_components

        if not cache_features:  # llmgan before the replay-feature cache: replayed fakes re-encoded every step
            cfg = dataclasses.replace(cfg, discriminator=dataclasses.replace(cfg.discriminator, cache_replay_features=False))
        self.cfg = cfg
        record = self.record = {"logs": [], "t0": None, "t1": None, "c0": None, "c1": None}

        class Recorder(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                record["t0"], record["c0"] = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kw):
                record["t1"], record["c1"] = time.perf_counter(), time.process_time()

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "train_runtime" not in logs:
                    record["logs"].append(dict(logs))

        overrides = {"save_strategy": "no"}
        if force_length:  # every completion exactly max_new_tokens long (EOS suppressed until then)
            overrides["generation_kwargs"] = {"min_new_tokens": cfg.generation.max_new_tokens}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            parts = build_components(cfg, Path(cfg.train.output_dir) / reward, callbacks=[Recorder()],
                                     reward_funcs=None if reward == "adversarial" else [constant_reward],
                                     args_overrides=overrides, quiet=True)
        self.trainer, self.disc = parts.trainer, parts.discriminator
        model, tok = parts.policy, parts.tokenizer
        self.model, self.tok = model, tok
        self.torch = torch

    def step(self, seed: int) -> dict:
        a = self.trainer.args
        a.seed = a.data_seed = seed
        self.record.update(logs=[], t0=None, t1=None, c0=None, c1=None)
        reset_ok = reset_peak()
        before = rss_mb()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            self.trainer.train()
        wall = time.perf_counter() - t0
        logs = self.record["logs"][-1] if self.record["logs"] else {}
        step_s = (self.record["t1"] - self.record["t0"]) if self.record["t0"] and self.record["t1"] else wall
        n = self.cfg.train.prompts_per_step * self.cfg.generation.num_generations
        cpu_s = (self.record["c1"] - self.record["c0"]) if self.record["c0"] is not None and self.record["c1"] is not None else float("nan")
        out = {"seed": seed, "step_s": step_s, "cpu_s": cpu_s, "train_call_s": wall, "samples": n, "samples_per_s": n / step_s,
               "completion_length": logs.get("completions/mean_length"),
               "peak_rss_mb": peak_rss_mb() if reset_ok else float("nan"), "rss_before_mb": before,
               "loadavg_1min": os.getloadavg()[0]}
        for k in ("timing/generate", "timing/encode", "timing/discriminator", "timing/reference", "timing/update", "step_time"):
            if k in logs:
                out[k] = float(logs[k])
        return out


def _summary(rows: list[dict], key: str) -> dict:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return {}
    return {"median": statistics.median(vals), "mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def rounds(steppers: list, steps: int, warmup: int, seed0: int = 1000) -> list[list[dict]]:
    """warmup + steps rounds of one step of each stepper, the order rotated every round (so no side always
    runs first); all steppers of a round use the same seed, hence the same prompts."""
    out: list[list[dict]] = [[] for _ in steppers]
    k = len(steppers)
    for i in range(warmup + steps):
        order = [(i + j) % k for j in range(k)]
        res = {}
        for j in order:
            res[j] = steppers[j].step(seed0 + i)
        if i >= warmup:
            for j in range(k):
                out[j].append(res[j])
        print(f"  round {i + 1}/{warmup + steps}{' (warm-up)' if i < warmup else ''}: "
              + "  ".join(f"{chr(65 + j)} {res[j]['step_s']:.2f} s" for j in range(k))
              + f"  load {os.getloadavg()[0]:.2f}", flush=True)
    return out


def _phases(rows: list[dict]) -> dict:
    keys = ["timing/generate", "timing/reference", "timing/encode", "timing/discriminator", "timing/update"]
    out = {k: statistics.median([r[k] for r in rows if k in r]) for k in keys if any(k in r for r in rows)}
    step = statistics.median([r["step_s"] for r in rows])
    out["other (optimizer, logging, bookkeeping)"] = max(step - sum(out.values()), 0.0)
    out["step"] = step
    return out


# ---------------------------------------------------------------------------------------------
# Modes


def mode_overhead(args) -> dict:
    cfg = make_cfg(args)
    print(f"overhead: adversarial vs constant reward, {args.prompts}x{args.generations}, {args.tokens} tokens, {args.dtype}")
    fl = args.force_length
    steppers = [Stepper(cfg, "adversarial", force_length=fl), Stepper(cfg, "constant", force_length=fl)]
    if not args.no_cache_variant:
        steppers.append(Stepper(cfg, "adversarial", force_length=fl, cache_features=False))
    res = rounds(steppers, args.steps, args.warmup)
    ra, rb = res[0], res[1]
    pair_ratios = [x["step_s"] / y["step_s"] for x, y in zip(ra, rb)]
    cpu_ratios = [x["cpu_s"] / y["cpu_s"] for x, y in zip(ra, rb)]
    uncached = None
    if len(res) > 2:
        rc = res[2]
        c_ratios = [x["step_s"] / y["step_s"] for x, y in zip(rc, rb)]
        c_cpu = [x["cpu_s"] / y["cpu_s"] for x, y in zip(rc, rb)]
        uncached = {"steps": rc, "step_s": _summary(rc, "step_s"), "phases": _phases(rc),
                    "overhead_ratio": {"median_of_pairs": statistics.median(c_ratios), "pairs": c_ratios,
                                       "cpu_median_of_pairs": statistics.median(c_cpu), "cpu_pairs": c_cpu},
                    "what": "the adversarial trainer with discriminator.cache_replay_features=false (replayed fakes "
                            "re-encoded every step, as llmgan did before the cache)"}
    return {"mode": "overhead", "shape": {"prompts": args.prompts, "generations": args.generations, "max_new_tokens": args.tokens,
                                          "dtype": args.dtype, "forced_length": fl},
            "adversarial": {"steps": ra, "step_s": _summary(ra, "step_s"), "phases": _phases(ra)},
            "constant": {"steps": rb, "step_s": _summary(rb, "step_s"), "phases": _phases(rb)},
            "overhead_ratio": {"median_of_pairs": statistics.median(pair_ratios), "pairs": pair_ratios,
                               "cpu_median_of_pairs": statistics.median(cpu_ratios), "cpu_pairs": cpu_ratios,
                               "ratio_of_medians": _summary(ra, "step_s")["median"] / _summary(rb, "step_s")["median"]},
            "adversarial_cache_hits": steppers[0].disc.cache_hits,
            "adversarial_uncached": uncached,
            "goal": "adversarial step at most 1.10 x the constant-reward step"}


class PrototypeStepper:
    """The earlier prototype's design (`train.objective=embedding`), one step per call.

    The loop body of llmgan.training.embedding_objective.train_embedding (same calls, same order): generate
    with llmgan.generator.generate_responses, discriminator update through DiscriminatorReward.train_step,
    then D's loss with label "real" back-propagated through the policy's own encoding of its text."""

    def __init__(self, cfg):
        import torch
        from transformers import set_seed

        from llmgan.adversarial.features import HiddenStateEncoder
        from llmgan.adversarial.reward import DiscriminatorReward
        from llmgan.models import build_policy
        from llmgan.training.dataset import load_train_dataset

        self.cfg = cfg
        set_seed(cfg.train.seed)
        self.tok, self.model = build_policy(cfg)
        self.rows, _ = load_train_dataset(cfg, self.tok)
        d = cfg.discriminator
        feats = HiddenStateEncoder.from_settings(d, policy=self.model, tokenizer=self.tok, dtype=cfg.model.dtype,
                                                 max_prompt_tokens=cfg.data.max_prompt_tokens)
        self.disc = DiscriminatorReward(d, cfg.reward, feats, seed=cfg.train.seed)
        self.own = HiddenStateEncoder(self.model, self.tok, layer=d.hidden_layer, condition_on_prompt=d.condition_on_prompt,
                                      max_response_tokens=d.max_response_tokens, max_prompt_tokens=cfg.data.max_prompt_tokens)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.train.lr)
        self.torch = torch

    def step(self, seed: int) -> dict:
        import torch.nn.functional as F

        from llmgan.generator import generate_responses

        torch, cfg = self.torch, self.cfg
        g, t = cfg.generation, cfg.train
        reset_ok = reset_peak()
        before = rss_mb()
        t_step, c_step = time.perf_counter(), time.process_time()
        idx = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(seed))[: t.prompts_per_step].tolist()
        rows = self.rows.select(idx)
        prompts = [list(m) for m in rows["prompt"] for _ in range(g.num_generations)]
        reals = [r for r in rows["response"] for _ in range(g.num_generations)]
        t0 = time.perf_counter()
        texts = generate_responses(self.model, self.tok, prompts, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                   top_p=g.top_p, seed=seed, progress=False, batch_size=len(prompts))
        t_gen = time.perf_counter() - t0
        m = self.disc.train_step(prompts=prompts, completions=texts, response=reals)
        t0 = time.perf_counter()
        self.model.train()
        hidden, mask = self.own.encode(prompts, texts, requires_grad=True)
        self.disc.model.eval()
        logits = self.disc.model(hidden, mask)
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm)
        self.opt.step()
        self.disc.model.zero_grad(set_to_none=True)
        t_upd = time.perf_counter() - t0
        step_s = time.perf_counter() - t_step
        cpu_s = time.process_time() - c_step
        n = len(prompts)
        lengths = [len(self.tok(x, add_special_tokens=False)["input_ids"]) for x in texts]
        return {"seed": seed, "step_s": step_s, "cpu_s": cpu_s, "samples": n, "samples_per_s": n / step_s,
                "completion_length": sum(lengths) / n, "timing/generate": t_gen, "timing/encode": m.get("timing/encode"),
                "timing/discriminator": m.get("timing/discriminator"), "timing/update": t_upd,
                "peak_rss_mb": peak_rss_mb() if reset_ok else float("nan"), "rss_before_mb": before,
                "loadavg_1min": os.getloadavg()[0]}


def mode_prototype(args) -> dict:
    print(f"prototype: adversarial (GRPO) vs the prototype's design (objective=embedding), {args.prompts}x{args.generations}, "
          f"{args.tokens} tokens, bfloat16")
    cfg = make_cfg(args, "model.dtype=bfloat16")
    adv = Stepper(cfg, "adversarial")
    proto = PrototypeStepper(make_cfg(args, "model.dtype=bfloat16", "train.objective=embedding"))
    ra, rb = rounds([adv, proto], args.steps, args.warmup, seed0=2000)
    adv_sps = _summary(ra, "samples_per_s")["median"]
    return {"mode": "prototype", "shape": {"prompts": args.prompts, "generations": args.generations, "max_new_tokens": args.tokens,
                                           "dtype": "bfloat16"},
            "adversarial": {"steps": ra, "step_s": _summary(ra, "step_s"), "samples_per_s": _summary(ra, "samples_per_s"),
                            "phases": _phases(ra)},
            "embedding_objective": {"steps": rb, "step_s": _summary(rb, "step_s"), "samples_per_s": _summary(rb, "samples_per_s")},
            "prototype_reference": PROTOTYPE,
            "ratio_vs_prototype_reference": adv_sps / PROTOTYPE["samples_per_s"],
            "ratio_vs_embedding_objective_measured": adv_sps / _summary(rb, "samples_per_s")["median"],
            "goal": "at least 2 x the prototype's samples/s at equal dtype and shapes"}


def mode_encode(args) -> dict:
    """The encoding pass the discriminator needs, three ways, on the same 16 fakes (+ prompts)."""
    import torch

    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.models import build_policy
    from llmgan.training.dataset import load_train_dataset

    cfg = make_cfg(args)
    tok, model = build_policy(cfg)
    rows, _ = load_train_dataset(cfg, tok)
    rows = rows.select(range(args.prompts * args.generations))
    prompts, texts = [list(m) for m in rows["prompt"]], list(rows["response"])
    d = cfg.discriminator
    kw = dict(layer=d.hidden_layer, condition_on_prompt=d.condition_on_prompt, max_response_tokens=d.max_response_tokens,
              max_prompt_tokens=cfg.data.max_prompt_tokens, disable_adapters=True)
    early = HiddenStateEncoder(model, tok, early_exit=True, **kw)
    full = HiddenStateEncoder(model, tok, early_exit=False, **kw)

    def with_head():
        # what a naive encoder does: the whole model, LM head included, output_hidden_states
        ids = [early._prefixes([p], 1)[0] + early._token_ids([x], d.max_response_tokens, "first")[0] for p, x in zip(prompts, texts)]
        width = max(map(len, ids))
        inp = torch.full((len(ids), width), early.pad_id)
        att = torch.zeros(len(ids), width, dtype=torch.long)
        for j, s in enumerate(ids):
            inp[j, :len(s)] = torch.tensor(s)
            att[j, :len(s)] = 1
        with torch.no_grad(), model.disable_adapter():
            model.eval()
            return model(input_ids=inp, attention_mask=att, output_hidden_states=True).hidden_states[d.hidden_layer]

    variants = {"early exit at layer 15, no LM head (llmgan)": lambda: early.encode(prompts, texts),
                "all 30 layers, no LM head": lambda: full.encode(prompts, texts),
                "all 30 layers + LM head (output_hidden_states)": with_head}
    times = {k: [] for k in variants}
    for rep in range(args.steps + 1):
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            if rep:
                times[k].append(time.perf_counter() - t0)
    res = {k: statistics.median(v) for k, v in times.items()}
    a, b = early.encode(prompts, texts)[0], full.encode(prompts, texts)[0]
    return {"mode": "encode", "sequences": len(texts), "median_s": res, "runs": times,
            "early_exit_matches_full": bool(torch.allclose(a, b, atol=1e-5))}


GRID = [(4, 4, 64), (8, 4, 64), (16, 4, 64), (4, 2, 64), (4, 8, 64), (4, 4, 32), (4, 4, 128)]


def mode_cell(args) -> dict:
    """One grid cell (run in its own process): warm-up step(s), then the timed steps, forced full length."""
    cfg = make_cfg(args)
    base = rss_mb()
    s = Stepper(cfg, "adversarial", force_length=True)
    loaded = rss_mb()
    rows = [s.step(3000 + i) for i in range(args.warmup + args.steps)][args.warmup:]
    peak_process = peak_rss_mb()  # VmHWM since the last reset: the timed steps
    return {"prompts": args.prompts, "generations": args.generations, "max_new_tokens": args.tokens, "dtype": args.dtype,
            "overrides": list(args.set),
            "samples": args.prompts * args.generations, "steps": rows, "step_s": _summary(rows, "step_s"),
            "samples_per_s": _summary(rows, "samples_per_s"), "phases": _phases(rows),
            "rss_at_start_mb": base, "rss_after_load_mb": loaded,
            "peak_rss_mb": max([r["peak_rss_mb"] for r in rows] + [peak_process])}


def mode_grid(args) -> dict:
    cells = []
    grid = [tuple(int(x) for x in c.split("x")) for c in args.grid.split(",")] if args.grid else GRID
    cell_dir = Path(args.grid_dir or args.tmp)
    for p, g, n in grid:
        done = cell_dir / f"cell-{p}-{g}-{n}" / "cell.json"
        if done.is_file():  # finished by an earlier (interrupted) grid run with the same --grid-dir
            cells.append(json.loads(done.read_text()))
            print(f"  grid cell {p}x{g}x{n}: reused {done}", flush=True)
            continue
        cmd = [sys.executable, __file__, "--mode", "cell", "--data", args.data, "--config", str(args.config),
               "--model", args.model, "--prompts", str(p), "--generations", str(g), "--tokens", str(n), "--dtype", args.dtype,
               "--steps", str(args.grid_steps), "--warmup", str(args.grid_warmup), "--out", str(cell_dir / f"cell-{p}-{g}-{n}")]
        for kv in args.set:
            cmd += ["--set", kv]
        print(f"  grid cell {p} prompts x {g} generations, {n} tokens ...", flush=True)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:])
            raise SystemExit(f"grid cell {p}x{g}x{n} failed")
        cell = json.loads(done.read_text())
        cell["process_wall_s"] = time.perf_counter() - t0
        done.write_text(json.dumps(cell, indent=1))
        print(f"    {cell['step_s']['median']:.2f} s/step, peak RSS {cell['peak_rss_mb']:.0f} MB", flush=True)
        cells.append(cell)
    return {"mode": "grid", "cells": cells, "note": "one factor at a time around 4 prompts x 4 generations x 64 tokens "
            f"(cells: {', '.join(f'{p}x{g}x{n}' for p, g, n in grid)}); {args.grid_steps} timed step(s) after "
            f"{args.grid_warmup} warm-up step(s) per cell, each cell in a fresh process; completions forced to max_new_tokens"}


# ---------------------------------------------------------------------------------------------
# Report


def _fmt_phases(ph: dict) -> list[str]:
    step = ph["step"]
    return [f"| {k.replace('timing/', '')} | {v:.2f} | {100 * v / step:.0f}% |" for k, v in ph.items() if k != "step"]


def _provenance(results: dict, key: str) -> list[str]:
    sec = results[key]
    m = sec.get("_machine") or results["machine"]
    cmd = sec.get("_command") or results.get("command", "")
    end = m.get("loadavg_end", ["?"])[0]
    return [f"Command: `OMP_NUM_THREADS={m.get('OMP_NUM_THREADS')} taskset -c {','.join(map(str, m['affinity']))} {cmd}`. "
            f"Machine: {m['host_cpu']}, {m['cores_visible']} cores shared with other jobs, this process pinned to core(s) "
            f"{m['affinity']}, {m['torch_threads']} torch thread(s), torch {m['torch']}; load average "
            f"{m['loadavg_start'][0]:.1f} at the start of the run, {end if isinstance(end, str) else f'{end:.1f}'} at the end; "
            f"started {m['date']}; {sec.get('wall_s', float('nan')) / 60:.0f} min for this part.", ""]


def markdown(results: dict) -> str:
    lines: list[str] = []
    if "overhead" in results:
        o = results["overhead"]
        a, c = o["adversarial"], o["constant"]
        loads = [r["loadavg_1min"] for r in a["steps"] + c["steps"]]
        lines += ["### Discriminator overhead", "", *_provenance(results, "overhead"),
                  f"{o['shape']['prompts']} prompts x {o['shape']['generations']} generations, {o['shape']['max_new_tokens']} new tokens, "
                  f"{o['shape']['dtype']}{', completions forced to full length' if o['shape'].get('forced_length') else ''}; "
                  f"{len(a['steps'])} rounds after warm-up; load average during the run "
                  f"{min(loads):.1f}-{max(loads):.1f}.", "",
                  "| trainer | s/step (median) | min-max | CPU s/step | samples/s | peak RSS (MB, whole process) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        cv = o.get("adversarial_uncached")
        for name, x in (("adversarial (discriminator reward, replay features cached)", a), ("constant reward", c),
                        ("adversarial, replay re-encoded (cache_replay_features=false)", cv)):
            if not x:
                continue
            sps = statistics.median(r["samples_per_s"] for r in x["steps"])
            pk = max(r["peak_rss_mb"] for r in x["steps"])
            cpu = statistics.median(r["cpu_s"] for r in x["steps"])
            lines.append(f"| {name} | {x['step_s']['median']:.2f} | {x['step_s']['min']:.2f}-{x['step_s']['max']:.2f} | {cpu:.2f} | "
                         f"{sps:.2f} | {pk:.0f} |")
        r = o["overhead_ratio"]
        lines += ["", f"Overhead: median of the per-pair ratios **{r['median_of_pairs']:.3f}** "
                      f"(+{100 * (r['median_of_pairs'] - 1):.1f}%; pairs {', '.join(f'{x:.3f}' for x in r['pairs'])}); "
                      f"on CPU time {r['cpu_median_of_pairs']:.3f}; goal at most 1.10."]
        if cv:
            c = cv["overhead_ratio"]
            lines += ["", f"Without the replay-feature cache: **{c['median_of_pairs']:.3f}** (CPU time "
                          f"{c['cpu_median_of_pairs']:.3f}) "
                          f"(pairs {', '.join(f'{x:.3f}' for x in c['pairs'])}). Replayed rows served from the cache by the "
                          f"default trainer: {o.get('adversarial_cache_hits')}."]
        lines += ["", "Where the adversarial step spends its time (medians):", "", "| phase | s | share |", "| --- | --- | --- |",
                  *_fmt_phases(a["phases"]), ""]
        if cv:
            lines += ["The same without the cache:", "", "| phase | s | share |", "| --- | --- | --- |",
                      *_fmt_phases(cv["phases"]), ""]
    if "prototype" in results:
        p = results["prototype"]
        a, e = p["adversarial"], p["embedding_objective"]
        lines += ["### Samples/s vs the prototype's design (bf16)", "", *_provenance(results, "prototype"),
                  f"{p['shape']['prompts']} prompts x {p['shape']['generations']} generations = "
                  f"{p['shape']['prompts'] * p['shape']['generations']} samples, {p['shape']['max_new_tokens']} new tokens, bfloat16; "
                  f"{len(a['steps'])} pairs after warm-up.", "",
                  "| design | s/step (median) | samples/s | CPU s/step | samples per CPU-s | mean completion tokens |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| prototype (issue's figure, not re-measured) | {PROTOTYPE['seconds_per_step']:.1f} | {PROTOTYPE['samples_per_s']:.2f} "
                  f"| - | - | <= 48 |"]
        for name, x in (("llmgan adversarial step (GRPO + discriminator reward)", a),
                        ("prototype's design in llmgan (`objective=embedding`), measured", e)):
            cl = statistics.median(r["completion_length"] for r in x["steps"] if r.get("completion_length") is not None)
            cpu = statistics.median(r["cpu_s"] for r in x["steps"])
            lines.append(f"| {name} | {x['step_s']['median']:.2f} | {x['samples_per_s']['median']:.2f} | {cpu:.2f} | "
                         f"{x['steps'][0]['samples'] / cpu:.2f} | {cl:.1f} |")
        cpu = statistics.median(r["cpu_s"] for r in a["steps"])
        lines += ["", f"Ratio vs the prototype's 1.42 samples/s: **{p['ratio_vs_prototype_reference']:.2f}x** on wall time, "
                      f"{a['steps'][0]['samples'] / cpu / PROTOTYPE['samples_per_s']:.2f}x on CPU time (goal >= 2x); "
                      f"vs the prototype's design re-run here side by side: {p['ratio_vs_embedding_objective_measured']:.2f}x.", ""]
    if "encode" in results:
        e = results["encode"]
        base = e["median_s"]["all 30 layers + LM head (output_hidden_states)"]
        lines += ["### The encoding pass", "", *_provenance(results, "encode"), f"{e['sequences']} prompt + response sequences, frozen reference (adapters off).", "",
                  "| encoder | s | vs full model + head |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v:.3f} | {v / base:.2f} |" for k, v in e["median_s"].items()]
        lines += ["", f"Early-exit features equal the full pass's layer-15 states: {e['early_exit_matches_full']}.", ""]
    if "grid" in results:
        lines += ["### Scaling with the batch shape", "", *_provenance(results, "grid"), results["grid"]["note"] + ".", "",
                  "| prompts | generations | tokens | samples | s/step | CPU s/step | samples/s | generate s | update s | peak RSS MB |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in results["grid"]["cells"]:
            ph = c["phases"]
            lines.append(f"| {c['prompts']} | {c['generations']} | {c['max_new_tokens']} | {c['samples']} | {c['step_s']['median']:.2f} | "
                         f"{statistics.median(r['cpu_s'] for r in c['steps']):.2f} | {c['samples_per_s']['median']:.2f} | {ph.get('timing/generate', float('nan')):.2f} | "
                         f"{ph.get('timing/update', float('nan')):.2f} | {c['peak_rss_mb']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def _same_cell(a: dict, b: dict) -> bool:
    return ((a["prompts"], a["generations"], a["max_new_tokens"], tuple(a.get("overrides", [])))
            == (b["prompts"], b["generations"], b["max_new_tokens"], tuple(b.get("overrides", []))))


def plot_grid(grid: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in grid["cells"] if not c.get("overrides")]  # lines: the plain cells
    others = [c for c in grid["cells"] if c.get("overrides")]  # e.g. gradient checkpointing: single markers
    base = (4, 4, 64)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for c in others:
        key = (c["prompts"], c["generations"], c["max_new_tokens"])
        diff = [i for i in range(3) if key[i] != base[i]]
        if len(diff) != 1:
            continue
        x = key[diff[0]] / base[diff[0]]
        cpu = statistics.median(r["cpu_s"] for r in c["steps"])
        label = f"{'x'.join(map(str, key))} with {', '.join(c['overrides'])}"
        axes[0].plot([x], [cpu], marker="x", linestyle="none", markersize=9, label=label)
        axes[1].plot([x], [c["peak_rss_mb"]], marker="x", linestyle="none", markersize=9, label=label)
    for label, idx, values in (("prompts per step", 0, (4, 8, 16)), ("generations per prompt", 1, (2, 4, 8)),
                               ("completion length", 2, (32, 64, 128))):
        pts = []
        for v in values:
            key = list(base)
            key[idx] = v
            c = next((c for c in cells if (c["prompts"], c["generations"], c["max_new_tokens"]) == tuple(key)), None)
            if c is not None:
                cpu = statistics.median(r["cpu_s"] for r in c["steps"])
                pts.append((v / base[idx], cpu, c["peak_rss_mb"]))
        if pts:
            x = [p[0] for p in pts]
            axes[0].plot(x, [p[1] for p in pts], marker="o", label=f"{label} ({', '.join(map(str, values))})")
            axes[1].plot(x, [p[2] for p in pts], marker="o", label=label)
    for ax, title in zip(axes, ("CPU seconds per adversarial step (1 thread)", "peak RSS of the process (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([0.5, 1, 2, 4])
        ax.set_xticklabels(["0.5x", "1x", "2x", "4x"])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("factor vs the base shape 4 prompts x 4 generations x 64 tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="all", choices=["all", "overhead", "prototype", "encode", "grid", "cell"])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="base config (default configs/twon-reply.yaml)")
    p.add_argument("--data", default=None, help="prepared data folder (default: /tmp/bench-data from ../shared TWON, else the demo file)")
    p.add_argument("--model", default="null", help="model (default null: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=5, help="timed steps (pairs) per comparison")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (pairs)")
    p.add_argument("--grid-steps", type=int, default=2, help="timed steps per grid cell")
    p.add_argument("--grid-warmup", type=int, default=1, help="untimed steps per grid cell")
    p.add_argument("--grid-dir", default=None, help="folder for the grid cells' results (finished cells are reused)")
    p.add_argument("--grid", default="", help="grid cells as PxGxN,... (default: all 7 one-factor cells)")
    p.add_argument("--report", nargs="*", default=None, metavar="RESULTS_JSON",
                   help="only rebuild results.md (+ grid.png) in --out from these results.json files (merged in order)")
    p.add_argument("--force-length", action="store_true", help="overhead: completions forced to max_new_tokens (less variance)")
    p.add_argument("--no-cache-variant", action="store_true", help="overhead: skip the variant without the replay-feature cache")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides (all modes)")
    p.add_argument("--skip", default="", help="comma-separated modes to skip in --mode all")
    p.add_argument("--out", default="bench/results/cpu", help="folder for results.json, results.md and grid.png")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report is not None:
        results: dict = {}
        for f in args.report:
            part = json.loads(Path(f).read_text())
            for k, v in part.items():
                if isinstance(v, dict) and k in ("overhead", "prototype", "encode", "grid"):
                    v.setdefault("_machine", part["machine"])
                    v.setdefault("_command", part.get("command", ""))
                    if k == "grid" and k in results:  # grid runs add cells (a later run's cell replaces the same cell)
                        for c in v["cells"]:
                            c.setdefault("_command", v["_command"])
                        keep = [c for c in results[k]["cells"] if not any(_same_cell(c, d) for d in v["cells"])]
                        results[k] = dict(results[k], cells=keep + v["cells"])
                        continue
                    if k == "grid":
                        for c in v["cells"]:
                            c.setdefault("_command", v["_command"])
                    results[k] = v
                elif k not in results:
                    results[k] = v
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        if "grid" in results:
            plot_grid(results["grid"], out / "grid.png")
        (out / "results.md").write_text(markdown(results))
        print(markdown(results))
        return 0
    args.data = prepared_data(args.data)
    args.tmp = tempfile.mkdtemp(prefix="llmgan-bench-")
    if args.mode == "cell":
        res = mode_cell(args)
        (out / "cell.json").write_text(json.dumps(res, indent=1))
        return 0
    results = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "config": str(args.config), "data": args.data}
    modes = ["overhead", "prototype", "encode", "grid"] if args.mode == "all" else [args.mode]
    skip = {s for s in args.skip.split(",") if s}
    for m in modes:
        if m in skip:
            continue
        t0 = time.perf_counter()
        if m == "grid":
            results[m] = mode_grid(args)
        else:
            results[m] = globals()[f"mode_{m}"](args)
        results[m]["wall_s"] = time.perf_counter() - t0
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if "grid" in results:
        plot_grid(results["grid"], out / "grid.png")
    md = markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
