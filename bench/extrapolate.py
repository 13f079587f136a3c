"""Weight extrapolation past the SFT model: theta = theta_base + (1 + alpha) * (theta_sft - theta_base). Do the SFT
model's drafts get harder to detect when its fine-tuning step is taken further along the same direction? (issue 14,
a probe on validation; nothing in the recipe uses it)

Why: every draft of a post topic shares what makes it detectable, so ranking drafts cannot remove it (RESULTS.md,
"Three ways to rank better"), and a cased n-gram reader sees a chatty, personal voice in that gap: the instruct
start model's (RESULTS.md, the seventeenth session). SFT moves the weights from that voice towards the data's; a
longer SFT at the same learning rate did not make the drafts harder to detect (the sixteenth session), but it also
moved along other directions. Extrapolating the SFT delta itself (ExPO, Zheng et al., arXiv 2404.16792, who
extrapolate from an SFT to an aligned model) tests whether more of the same step helps. alpha = 0 is the SFT model.

The SFT model may be a LoRA adapter folder (`llmgan sft`'s RUN/final/generator: merged into its base when loaded,
so the delta is the adapter's B A scaled) or a full model with --base. Every floating-point tensor is
extrapolated; the output is a full model in safetensors with the SFT model's tokenizer, for `llmgan generate
--model OUT`.

Example (the twenty-seventh session, RESULTS.md):
  python bench/extrapolate.py --model runs/r37-post-sft/final/generator --alpha 0.5 -o out/r37/expo-0.5
  llmgan generate data/right-post --split validation --limit 250 --model out/r37/expo-0.5 --seed 1100 \\
      --temperature 1.0 --top-p 1.0 --max-new-tokens 71 -o out/r37/post-val-expo-0.5-d0.jsonl
One CPU: seconds for the 135M model (two copies in memory); one GPU: the same, it runs on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping

import torch


def extrapolate(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """base, tuned: state dicts of one architecture -> base + (1 + alpha) * (tuned - base) per floating-point
    tensor, computed in float32 and cast back to tuned's dtype; other tensors (integer buffers) are tuned's.
    alpha = 0 gives tuned, alpha = -1 gives base. Keys or shapes that differ are an error naming the first."""
    if set(base) != set(tuned):
        diff = sorted(set(base) ^ set(tuned))
        raise ValueError(f"the two models differ in {len(diff)} tensors, e.g. {diff[0]}: not one architecture")
    out = {}
    for k, t in tuned.items():
        b = base[k]
        if b.shape != t.shape:
            raise ValueError(f"{k}: shape {tuple(b.shape)} in the base, {tuple(t.shape)} in the tuned model")
        if not t.is_floating_point():
            out[k] = t.clone()
            continue
        bf, tf = b.float(), t.float()
        out[k] = (bf + (1.0 + alpha) * (tf - bf)).to(t.dtype)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the SFT model: a LoRA adapter folder or a full model")
    p.add_argument("--base", default=None,
                   help="the model SFT started from (default: the adapter's base; needed for a full model)")
    p.add_argument("--alpha", type=float, required=True, help="how far past the SFT model (0: the SFT model)")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the extrapolated model")
    args = p.parse_args()

    from llmgan.adversarial.teacher import same_model
    from llmgan.errors import LlmganError
    from llmgan.models import adapter_base, load_model, load_tokenizer, resolve_model_path

    if args.output.exists() and any(args.output.iterdir()):
        sys.exit(f"-o {args.output}: exists and is not empty; choose a new folder")
    try:
        recorded = adapter_base(resolve_model_path(args.model))
        if recorded and args.base and not same_model(args.base, recorded):
            # the adapter is always merged into the base it records, so another --base would extrapolate from a
            # start SFT never had
            sys.exit(f"--base {args.base} is not the base the adapter {args.model} records ({recorded}); leave "
                     "--base out for an adapter")
        base_name = args.base or recorded
        if base_name is None:
            sys.exit(f"--model {args.model} is a full model, not a LoRA adapter folder: name the model it was "
                     "fine-tuned from with --base")
        tuned = load_model(args.model, dtype="float32")
        base = load_model(base_name, dtype="float32")
        tok = load_tokenizer(args.model)
    except LlmganError as exc:
        sys.exit(str(exc))
    try:
        new = extrapolate(base.state_dict(), tuned.state_dict(), args.alpha)
    except ValueError as exc:
        sys.exit(f"--model {args.model} and --base {base_name}: {exc}")
    tuned.load_state_dict(new)
    tuned.config._name_or_path = str(args.output)
    args.output.mkdir(parents=True, exist_ok=True)
    tuned.save_pretrained(args.output, safe_serialization=True)
    tok.save_pretrained(args.output)
    start = base.state_dict()
    delta = sum(float((v.float() - start[k].float()).norm() ** 2) for k, v in new.items()
                if v.is_floating_point()) ** 0.5
    print(f"wrote {args.output}: base {base_name} + {1 + args.alpha:g} x (SFT - base); |delta| {delta:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
