"""Choose the model a run ships by a held-out split: `llmgan select RUN`.

Adversarial training has no loss that says when to stop: the discriminator's accuracy hovers near
chance and its reward keeps moving the policy, mostly in length (RESULTS.md). So, as with early
stopping, the start model (step 0, e.g. the SFT warm start) and every kept checkpoint of RUN are
sampled on a split the run never trained on (`validation` by default), scored with the offline
detectors of `llmgan evaluate` (by default minilm_lr and ngram_lr, 5-fold, a prompt's two responses
in one fold), and the one that is hardest to detect by the strongest of them (detector_auroc_max) is
copied to RUN/selected/generator.
The test split stays untouched for the final report. Selection can pick step 0: then the
adversarial stage did not help on this data, and the run says so.

Writes RUN/selection/selection.json (every candidate's scores, the choice and the settings),
RUN/selection/selection.md (the same as a table), RUN/selection/selection.png (the candidates' detector
AUROC, length and relevance against the step), RUN/selection/step-N.jsonl (the samples, ready
for `llmgan evaluate`) and RUN/selected/generator (the chosen adapter or model files). Runs by
itself on a finished run, or at the end of `llmgan train` with `selection.enabled: true`; the
settings come from the run's config.yaml `selection:` section and the flags below override them.

How it differs from the textbook GAN: a GAN keeps its last generator; here the last one is only a
candidate. Keep every checkpoint you want considered: `train.keep_checkpoints` >= steps / save_every.

One CPU: about two minutes a candidate for 250 prompts of the 135M default (2 cores, idle). One GPU: `--device cuda`.
Example:
  llmgan select runs/twon-reply               # validation split, settings from the run's config
  llmgan generate data/prelim-reply --split test --model runs/twon-reply/selected/generator -o out/test.jsonl
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from llmgan.errors import LlmganError

SELECTION_DIR = "selection"
SELECTED_DIR = "selected"
# files of a Trainer checkpoint that are training state, not the model: never copied to selected/
TRAINING_STATE_FILES = {"optimizer.pt", "scheduler.pt", "training_args.bin", "trainer_state.json",
                        "llmgan_state.json", "COMPLETE", "scaler.pt"}


@dataclass
class Candidate:
    """One model a run could ship: its step (0 = the start model) and where its weights are."""

    step: int
    model: Optional[str]  # a local folder, an HF id, or None for the embedded default
    label: str


def candidates(run_dir: str | Path) -> list[Candidate]:
    """The start model, every complete checkpoint and final/ of a run folder, by step (final replaces the
    checkpoint of its own step: the same weights)."""
    from llmgan.config import load_config
    from llmgan.training.runs import SFT_DIR, checkpoint_step, checkpoints

    run = Path(run_dir)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise LlmganError(f"{run} is not a run folder (no config.yaml); pass the folder `llmgan train` wrote")
    cfg = load_config(cfg_file)
    if cfg.train.sft_warm_start:
        start = run / SFT_DIR / "final" / "generator"
        if not start.is_dir():
            raise LlmganError(f"{start} is missing: the run's SFT warm start did not finish")
        found = [Candidate(0, str(start), "start (SFT warm start)")]
    else:
        found = [Candidate(0, cfg.model.name, f"start ({cfg.model.name or 'embedded default'})")]
    by_step = {checkpoint_step(c): Candidate(checkpoint_step(c), str(c), c.name) for c in checkpoints(run)}
    final = run / "final" / "generator"
    if final.is_dir():
        step = _last_logged_step(run) or cfg.train.steps  # a run stopped early (saturation) ends before train.steps
        by_step[step] = Candidate(step, str(final), "final")
    return found + [by_step[s] for s in sorted(by_step) if s > 0]


def _last_logged_step(run: Path) -> Optional[int]:
    """The last step in metrics.jsonl (None without one)."""
    from llmgan.plots import read_metrics

    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if isinstance(r.get("step"), int)]
    return max(steps) if steps else None


def score_responses(real: Sequence[str], generated: Sequence[str], *, seed: int = 0,
                    threads: Optional[int] = None) -> dict[str, float]:
    """The selection scores of one candidate: `llmgan.evaluation.score_for_selection` (the detectors' AUROCs
    with their bootstrap intervals, style AUROC and the cheap distribution checks: length, relevance,
    diversity). MAUVE and self-BLEU are left to `llmgan evaluate` (they cost more than they add to a choice)."""
    from llmgan.evaluation import score_for_selection

    return score_for_selection(None, real, generated, seed=seed, threads=threads)


def choose(scores: Sequence[dict[str, Any]]) -> int:
    """Index of the candidate with the lowest detector_auroc_max, the strongest detector's AUROC (the earliest
    step on a tie)."""
    if not scores:
        raise LlmganError("no candidates to choose from")
    return min(range(len(scores)), key=lambda i: (scores[i]["detector_auroc_max"], scores[i]["step"]))


def copy_model_files(source: str | Path, target: str | Path) -> Path:
    """Copy a model or adapter folder's own files (weights, configs, tokenizer) without a checkpoint's training
    state or subfolders, into `target` (replaced atomically)."""
    from llmgan.io import atomic_dir

    src, dst = Path(source), Path(target)
    with atomic_dir(dst) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name not in TRAINING_STATE_FILES and not f.name.startswith("rng_state"):
                shutil.copy2(f, tmp / f.name)
    return dst


def select(run_dir: str | Path, *, data: Optional[str] = None, split: Optional[str] = None,
           limit: Optional[int] = None, temperature: Optional[float] = None, top_p: Optional[float] = None,
           max_new_tokens: Optional[int] = None, seed: int = 0, device: str = "cpu",
           threads: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
    """Score every candidate of a run on a held-out split and copy the best to RUN/selected/generator.

    Settings left as None come from the run's config.yaml (`selection:`, then `generation:` for the
    sampling). Returns what selection.json holds.
    """
    from llmgan.config import load_config
    from llmgan.data import load_prepared
    from llmgan.generator import generate_responses
    from llmgan.io import check_output_path, last_user_message, read_data_caps, write_atomic, write_rows
    from llmgan.models import load_model, load_tokenizer

    run = Path(run_dir)
    found = candidates(run)
    for out, kind in ((run / SELECTION_DIR, "dir"), (run / SELECTED_DIR, "dir")):  # before any model loads
        check_output_path(out, kind=kind, what="selection output")
    cfg = load_config(run / "config.yaml")
    sel = cfg.selection
    data = data or cfg.data.path
    split = split or sel.split
    limit = limit if limit is not None else sel.limit
    temperature = temperature if temperature is not None else (sel.temperature or cfg.generation.temperature)
    top_p = top_p if top_p is not None else (sel.top_p or cfg.generation.top_p)
    # null: as trained (the run's caps from the data when it took them from there)
    max_new_tokens = max_new_tokens or sel.max_new_tokens or \
        (read_data_caps(run) or {}).get("generation.max_new_tokens", cfg.generation.max_new_tokens)
    if temperature <= 0 or not 0 < top_p <= 1 or max_new_tokens < 1 or limit < 1:
        raise LlmganError("selection needs temperature > 0, 0 < top_p <= 1, max_new_tokens >= 1 and limit >= 1")
    ds = load_prepared(data)
    if split not in ds:
        raise LlmganError(f"split '{split}' not in {data} (splits: {', '.join(ds)}); selection needs a split the "
                          f"run did not train on")
    if split == cfg.data.train_split:
        raise LlmganError(f"selection.split '{split}' is the training split; choose a held-out one (validation)")
    n = min(limit, len(ds[split]))
    if n < 10:
        raise LlmganError(f"selection would score {n} rows (split '{split}' of {data} has {len(ds[split])}, limit "
                          f"{limit}); it needs at least 10 for the 5-fold detector")
    rows = ds[split].select(range(n))
    prompts = [list(m) for m in rows["prompt"]]
    users = [last_user_message(msgs) for msgs in prompts]
    real = list(rows["response"])
    out_dir = run / SELECTION_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"selection: {len(found)} candidates (steps {', '.join(str(c.step) for c in found)}) on {len(rows)} "
              f"'{split}' prompts of {data}, temperature {temperature}, top-p {top_p}, {max_new_tokens} new tokens")
    scores = []
    for c in found:
        t0 = time.perf_counter()
        tok = load_tokenizer(c.model, trust_remote_code=cfg.model.trust_remote_code)
        model = load_model(c.model, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code).to(device)
        texts = generate_responses(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, seed=seed, progress=progress)
        del model
        write_rows([{"prompt": u, "real": r, "generated": g} for u, r, g in zip(users, real, texts)],
                   out_dir / f"step-{c.step}.jsonl")
        s = {"step": c.step, "label": c.label, "model": c.model,
             **score_responses(real, texts, seed=seed, threads=threads),
             "seconds": round(time.perf_counter() - t0, 1)}
        scores.append(s)
        if progress:
            print(f"  step {c.step:>4} ({c.label}): detector AUROC {s['detector_auroc_max']:.3f} "
                  f"[{s['detector_auroc_max_low']:.3f}, {s['detector_auroc_max_high']:.3f}] "
                  f"({s['detector_auroc_max_detector']}), style {s['style_auroc']:.3f}, "
                  f"{s['mean_words']:.1f} words (human {s['human_mean_words']:.1f}), {s['seconds']:.0f} s")
    best = scores[choose(scores)]
    target = None
    if best["model"] and Path(best["model"]).is_dir():
        target = str(copy_model_files(best["model"], run / SELECTED_DIR / "generator"))
    else:  # a hub id or the embedded default: nothing to copy, and an earlier choice must not linger
        shutil.rmtree(run / SELECTED_DIR, ignore_errors=True)
    result = {"selected": {**best, "copied_to": target}, "candidates": scores, "criterion": "lowest detector_auroc_max",
              "settings": {"data": str(data), "split": split, "rows": len(rows), "temperature": temperature,
                           "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed}}
    write_atomic(out_dir / "selection.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")  # NaN allowed
    write_atomic(out_dir / "selection.md", selection_table(result))
    try:  # the figure is a view of what is already written: a drawing failure must not lose the selection
        from llmgan.plots import plot_selection

        plot_selection(result, out_dir / "selection.png")
    except Exception as e:  # noqa: BLE001 - reported, and selection.json/.md stand
        print(f"selection: could not draw {out_dir / 'selection.png'}: {e}", flush=True)
    if progress:
        where = target or (best["model"] or "the embedded default model")
        print(f"selected step {best['step']} ({best['label']}): detector AUROC {best['detector_auroc_max']:.3f} on "
              f"'{split}' -> {where}")
    return result


def selection_table(result: dict[str, Any]) -> str:
    """selection.json as a Markdown table (the chosen row in bold)."""
    s = result["settings"]
    lines = [f"Selection on {s['rows']} '{s['split']}' prompts of {s['data']} (temperature {s['temperature']}, "
             f"top-p {s['top_p']}, {s['max_new_tokens']} new tokens, seed {s['seed']}); criterion: "
             f"{result['criterion']}.", "",
             "| step | model | detector AUROC, strongest (95 % interval) | style AUROC | mean words (human) | length W1 | "
             "relevance | distinct-2 |", "| ---: | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    chosen = result["selected"]["step"]
    for c in result["candidates"]:
        b = "**" if c["step"] == chosen else ""
        lines.append(f"| {b}{c['step']}{b} | {c['label']} | {b}{c['detector_auroc_max']:.3f}{b} "
                     f"({c['detector_auroc_max_low']:.3f}-{c['detector_auroc_max_high']:.3f}, "
                     f"{c.get('detector_auroc_max_detector', '')}) | {c['style_auroc']:.3f} | "
                     f"{c['mean_words']:.1f} ({c['human_mean_words']:.1f}) | {c['length_wasserstein']:.2f} | "
                     f"{c['relevance_cosine']:.3f} | {c['distinct_2']:.3f} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by `llmgan train`")
    p.add_argument("--data", default=None, help="prepared dataset (default: the run's data.path)")
    p.add_argument("--split", default=None, help="held-out split to score on (default: selection.split, validation)")
    p.add_argument("--limit", type=int, default=None, help="first N rows of the split (default: selection.limit)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the training one)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default: the training one)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="new tokens (default: selection.max_new_tokens)")
    p.add_argument("--seed", type=int, default=0, help="sampling and detector seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for generation (cpu, cuda, ...)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the sentence encoder")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    select(args.run, data=args.data, split=args.split, limit=args.limit, temperature=args.temperature,
           top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, device=args.device,
           threads=args.threads, progress=not args.quiet)
    return 0
