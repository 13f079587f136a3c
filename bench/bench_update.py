"""What the generator's forward + backward costs on the CPU, side by side in one process (issue 14, "Speed").

Two comparisons on the recipe's policy (the embedded SmolLM2-135M-Instruct with LoRA r=16 on all linear layers,
float32, torch's threads as set by the environment), each on one batch shaped like the reply recipe's:
16 sequences = 4 training prompts x 4 (chat template, left-padded, cut at data.max_prompt_tokens) followed by
16 real replies of the training split, right-padded and cut at --completion-tokens:

  logprobs   the log-probs of the completion tokens, as the game's update (forward + backward) and as its
             KL reference (forward only, no gradient):
               trl     TRL 1.16's fused, tiled LM head (every position of prompt + completion is projected
                       on a device without Triton, and again in backward)
               llmgan  llmgan.training.logprobs.completion_logps (logits of the completion positions only)
             and the largest difference between the two (log-probs, gradients of the LoRA weights).
  sft        one SFT step's forward + backward (the loss on the reply tokens, as TRL's SFTTrainer computes it):
               trl_checkpointing  TRL's fused head with gradient checkpointing: llmgan's SFT before
                                  2026-12-03 (TRL's SFTConfig turns checkpointing on by default)
               trl                TRL's fused head, no checkpointing
               llmgan             llmgan.training.logprobs.labelled_logps (only the reply positions
                                  through the LM head), no checkpointing: llmgan's SFT on the CPU now
               llmgan_checkpointing  the same with gradient checkpointing (model.gradient_checkpointing=true)

Each round runs every variant once (the order rotated each round, the first round discarded); the table gives
the median and range of wall seconds and CPU seconds (time.process_time) over the other rounds.

Example (BENCHMARKS.md): python bench/bench_update.py --config configs/twon-reply.yaml --data data/prelim-reply \\
    --rounds 4 --json bench/results/update/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llmgan.config import load_config  # noqa: E402
from llmgan.models import build_policy  # noqa: E402
from llmgan.training.logprobs import completion_logps, labelled_logps  # noqa: E402


def batch(cfg, tok, data: str, completion_tokens: int):
    """input_ids, attention_mask [16, T] and K = the completion width: 4 prompts x 4, then 16 real replies."""
    import datasets

    rows = datasets.load_from_disk(data)["train"].select(range(16))
    prompts, replies = [], []
    for i, r in enumerate(rows):
        p = rows[i - i % 4]["prompt"]  # 4 prompts, 4 completions each
        text = tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        prompts.append(tok(text, add_special_tokens=False)["input_ids"][-cfg.data.max_prompt_tokens:])
        replies.append(tok(r["response"], add_special_tokens=False)["input_ids"][:completion_tokens - 1] + [tok.eos_token_id])
    P, K = max(map(len, prompts)), max(map(len, replies))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((16, P + K), pad, dtype=torch.long)
    mask = torch.zeros((16, P + K), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, replies)):
        ids[i, P - len(p):P], mask[i, P - len(p):P] = torch.tensor(p), 1
        ids[i, P:P + len(c)], mask[i, P:P + len(c)] = torch.tensor(c), 1
    return ids, mask, K


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/twon-reply.yaml")
    ap.add_argument("--data", default="data/prelim-reply")
    ap.add_argument("--completion-tokens", type=int, default=61, help="the recipe's generation.max_new_tokens")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--only", default="logprobs,sft", help="comma-separated: logprobs, sft")
    ap.add_argument("--json", help="write the raw timings here")
    args = ap.parse_args()

    from accelerate import Accelerator
    from trl import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    cfg = load_config(args.config, [])
    tok, model = build_policy(cfg)
    model.train()
    ids, mask, k = batch(cfg, tok, args.data, args.completion_tokens)
    print(f"batch: 16 x {ids.shape[1]} tokens ({int(mask.sum())} real), completion width {k}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    add_fused_lm_head(model.get_base_model(), temperature=cfg.generation.temperature, outputs=("log_probs", "entropy"))
    trl_self = type("T", (), {"accelerator": Accelerator(cpu=True)})()
    weights = torch.randn(16, k, generator=torch.Generator().manual_seed(0))
    lora = [p for p in model.parameters() if p.requires_grad]

    def trl_logps():
        return GRPOTrainer._get_per_token_logps_and_entropies(trl_self, model, ids, mask, k, compute_entropy=True)[0]

    def ours_logps():
        return completion_logps(model, ids, mask, k, temperature=cfg.generation.temperature)[0]

    def update(fn):
        def run():
            model.zero_grad(set_to_none=True)
            logps = fn()
            (logps * weights).sum().backward()
            return logps.detach(), [p.grad.detach().clone() for p in lora]
        return run

    def reference(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :ids.shape[1] - k] = -100

    def sft(path: str, checkpointing: bool):
        def run():
            if checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_disable()
            model.zero_grad(set_to_none=True)
            if path == "trl":
                logps = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs
            else:
                logps = labelled_logps(model, ids, mask, labels)[0]
            loss = -logps.sum() / (labels[:, 1:] != -100).sum()
            loss.backward()
            model.gradient_checkpointing_disable()
            return loss.detach()
        return run

    variants = {}
    if "logprobs" in args.only:
        variants.update({"update/trl": update(trl_logps), "update/llmgan": update(ours_logps),
                         "reference/trl": reference(trl_logps), "reference/llmgan": reference(ours_logps)})
    if "sft" in args.only:
        variants.update({"sft/trl_checkpointing": sft("trl", True), "sft/trl": sft("trl", False),
                         "sft/llmgan": sft("llmgan", False), "sft/llmgan_checkpointing": sft("llmgan", True)})
    names = list(variants)
    times = {n: [] for n in names}
    outs = {}
    for r in range(args.rounds + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            wall, cpu, out = timed(variants[n])
            outs[n] = out
            if r > 0:
                times[n].append((wall, cpu))
            print(f"round {r} {n}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    checks = {}
    if "logprobs" in args.only:
        (a, ga), (b, gb) = outs["update/llmgan"], outs["update/trl"]
        checks["max_abs_logp_diff"] = float((a - b).abs().max())
        checks["max_rel_grad_diff"] = max(float((x - y).norm() / y.norm().clamp(min=1e-12)) for x, y in zip(ga, gb))
    if "sft" in args.only:
        checks["sft_loss_diff"] = max(float((outs["sft/trl_checkpointing"] - outs[n]).abs()) for n in ("sft/trl", "sft/llmgan", "sft/llmgan_checkpointing"))
    print("\n| variant | wall s, median (range) | CPU s, median |\n| --- | ---: | ---: |")
    for n in names:
        w = [t[0] for t in times[n]]
        print(f"| {n} | {statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f}) | {statistics.median(t[1] for t in times[n]):.2f} |")
    print(json.dumps(checks))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"shape": list(ids.shape), "completion_width": k, "real_tokens": int(mask.sum()),
                                               "threads": torch.get_num_threads(), "times": times, "checks": checks,
                                               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
