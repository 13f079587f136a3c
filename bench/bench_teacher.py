"""Which discriminator is a teacher at least as strong as the judge? (issue 14)

Every variant learns real vs start-model replies from one fixed pool and is scored on one fixed held-out set:
- pool: --pool training prompts (a seeded draw), one start-model sample each at the config's training
  sampling, against their real replies;
- held-out: the first --heldout prompts of the validation split, sampled exactly as `llmgan train`'s
  held-out set (`discriminator.heldout_size`, seed train.seed * 100003 + 4242);
- the judge: `llmgan evaluate`'s default detectors, cross-validated on the held-out texts themselves
  (`judge/heldout_auroc_max` of a run's warm-up).
Samples are cached in --work (pool.jsonl, heldout.jsonl) and reused by a later call with the same settings.

Variants (--variants):
  transformer_bce, transformer_bt  the shipped discriminator (llmgan's `Discriminator`: 2 layers, width 256,
                                   mean pooling) over the start model's frozen states at --layer (prompt
                                   and response read together, response tokens kept), BCE or Bradley-Terry
  linear_bt                        mean-pooled states at --layer, LayerNorm, one linear layer
  probe_LAYERS                     logistic regression (sklearn, standardised, C by 5-fold CV on the pool) on
                                   mean-pooled states, one fit per layer in LAYERS (e.g. probe_4,8,15,22,30)
  lm                               the start model's first 8 layers, LoRA rank 16, a head on the last token,
                                   Bradley-Terry (`discriminator.architecture=lm`); slow: about 9 s an update
The trained variants run --epochs passes over the pool with AdamW (batch --batch pairs, one update per
batch; no label smoothing, no replay, unlike `llmgan train`'s warm-up) and report the held-out AUROC after
epochs 1, 2, 4, 8, ... The held-out set is the validation split:
nothing here looks at a test split.

Example (docs/discriminator-options.md, "A teacher from a pool"):
  python bench/bench_teacher.py --config configs/twon-reply.yaml --data data/prelim-reply \\
      --model runs/r9-reply/sft/final/generator --pool 512 --heldout 256 --work out/teacher \\
      --variants probe_4,8,15,22,30,transformer_bce,transformer_bt,linear_bt --json out/teacher/result.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llmgan.adversarial.discriminators import Discriminator, LMDiscriminator  # noqa: E402
from llmgan.adversarial.features import HiddenStateEncoder, TokenEncoder  # noqa: E402
from llmgan.adversarial.losses import LOSSES  # noqa: E402
from llmgan.stats import rank_auroc  # noqa: E402

MAX_TOKENS = 48  # response tokens read: the config's discriminator.max_response_tokens (set in main)


def samples(cfg, model, tok, rows, seed: int, path: Path) -> list[dict]:
    from llmgan.training.stages import start_model_samples

    prompts, reals = [list(m) for m in rows["prompt"]], list(rows["response"])
    fakes = start_model_samples(cfg, model, tok, prompts, reals, seed, path, progress=True)
    return [{"prompt": p, "real": r, "fake": f} for p, r, f in zip(prompts, reals, fakes)]


def encode(encoder, rows: list[dict], key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """States [N, MAX_TOKENS, H'] and masks [N, MAX_TOKENS] of the `key` texts, read after their prompts."""
    hs, ms = [], []
    for i in range(0, len(rows), 32):
        h, m = encoder.encode([r["prompt"] for r in rows[i:i + 32]], [r[key] for r in rows[i:i + 32]])
        hs.append(nn.functional.pad(h, (0, 0, 0, MAX_TOKENS - h.shape[1])))
        ms.append(nn.functional.pad(m, (0, MAX_TOKENS - m.shape[1])))
    return torch.cat(hs), torch.cat(ms)


class LayersEncoder(HiddenStateEncoder):
    """The states of several layers side by side ([B, T, H * len(layers)]), one forward pass."""

    def __init__(self, *args, layers=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.layers = list(layers)
        self.hidden_size *= len(self.layers)

    def _layer_states(self, input_ids, attention_mask):
        out = self._decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              output_hidden_states=True)
        return torch.cat([out.hidden_states[k] for k in self.layers], dim=-1)


def pooled(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    w = m.float()[..., None]
    return (h * w).sum(1) / w.sum(1).clamp(min=1.0)


class MeanLinear(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, 1)

    def forward(self, h, m):
        return self.head(self.norm(pooled(h, m))).squeeze(-1)


def train_epochs(name: str, model: nn.Module, logits, n: int, held, lr: float, loss: str, args) -> list[dict]:
    """AdamW over the pool (rows 0..n-1), `args.batch` pairs per update; held-out AUROC after epochs 1, 2, 4, ..."""
    class Settings:
        label_smoothing = 0.0

    fn = LOSSES[loss].fn
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    out, t0 = [], time.perf_counter()

    def report(epoch):
        model.eval()
        with torch.no_grad():
            real, fake = held()
        model.train()
        row = {"variant": name, "epoch": epoch, "heldout_auroc": rank_auroc(real.numpy(), fake.numpy()),
               f"heldout_auroc_first_{args.first}": rank_auroc(real[:args.first].numpy(), fake[:args.first].numpy()),
               "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        out.append(row)

    report(0)
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=g)
        for s in range(0, n - args.batch + 1, args.batch):
            real, fake = logits(order[s:s + args.batch])
            value = fn(real, fake, Settings)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
        if epoch & (epoch - 1) == 0 or epoch == args.epochs:  # 1, 2, 4, 8, ... and the last
            report(epoch)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="the run's config (generation settings, train.seed)")
    ap.add_argument("--data", required=True, help="prepared dataset (llmgan prepare)")
    ap.add_argument("--model", required=True, help="the start model (e.g. RUN/sft/final/generator)")
    ap.add_argument("--pool", type=int, default=512, help="training prompts in the pool")
    ap.add_argument("--heldout", type=int, default=256, help="first N validation prompts")
    ap.add_argument("--first", type=int, default=128, help="also report the AUROC on the first N held-out pairs")
    ap.add_argument("--layer", type=int, default=15, help="the frozen states the state-reading variants read")
    ap.add_argument("--variants", default="probe_8,15,22,transformer_bce,transformer_bt,linear_bt")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", required=True, help="folder for the cached samples")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args()

    from llmgan.config import load_config
    from llmgan.evaluation import score_for_selection
    from llmgan.io import last_user_message
    from llmgan.models import build_policy, is_peft_model, load_model
    from llmgan.training.dataset import load_train_dataset

    torch.manual_seed(0)
    cfg = load_config(args.config, [f"model.name={args.model}", f"data.path={args.data}"])
    global MAX_TOKENS
    MAX_TOKENS = cfg.discriminator.max_response_tokens
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tok, policy = build_policy(cfg)
    policy.eval()
    train, val = load_train_dataset(cfg, tok)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(123))[:args.pool].tolist()
    pool = samples(cfg, policy, tok, train.select(pick), 777, work / "pool.jsonl")
    held = samples(cfg, policy, tok, val.select(range(min(args.heldout, len(val)))), cfg.train.seed * 100003 + 4242,
                   work / "heldout.jsonl")
    rows: list[dict] = []
    judge = score_for_selection([last_user_message(r["prompt"]) for r in held], [r["real"] for r in held],
                                [r["fake"] for r in held], seed=0)
    first = score_for_selection([last_user_message(r["prompt"]) for r in held[:args.first]],
                                [r["real"] for r in held[:args.first]], [r["fake"] for r in held[:args.first]], seed=0)
    rows.append({"variant": "judge", "heldout_auroc": judge["detector_auroc_max"], "detector": judge["detector_auroc_max_detector"],
                 f"heldout_auroc_first_{args.first}": first["detector_auroc_max"]})
    print(json.dumps(rows[-1]), flush=True)

    variants: list[str] = []  # "probe_8,15,transformer_bt" -> ["probe_8,15", "transformer_bt"]
    for token in args.variants.split(","):
        if token.isdigit() and variants and variants[-1].startswith("probe_"):
            variants[-1] += "," + token
        else:
            variants.append(token)
    # the encoders read the sampling policy itself with its (fresh, zero) LoRA adapters off: the start model,
    # without loading it again
    model = policy
    kwargs = dict(condition_on_prompt=True, max_response_tokens=MAX_TOKENS, max_prompt_tokens=cfg.data.max_prompt_tokens)
    width = int(model.config.hidden_size)
    off = dict(disable_adapters=is_peft_model(model))
    for v in [v for v in variants if v.startswith("probe_")]:
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        layers = [int(x) for x in v[len("probe_"):].split(",")]
        enc = LayersEncoder(model, tok, layer=-1, early_exit=False, layers=layers, **off, **kwargs)
        t0 = time.perf_counter()
        f = {k: pooled(*encode(enc, part, key)).numpy() for k, part, key in
             [("pr", pool, "real"), ("pf", pool, "fake"), ("hr", held, "real"), ("hf", held, "fake")]}
        for j, layer in enumerate(layers):
            cut = slice(j * width, (j + 1) * width)
            clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[1e-4, 1e-3, 1e-2, 1e-1, 1], cv=5, max_iter=2000))
            clf.fit(np.r_[f["pr"][:, cut], f["pf"][:, cut]], np.r_[np.ones(len(pool)), np.zeros(len(pool))])
            real, fake = clf.decision_function(f["hr"][:, cut]), clf.decision_function(f["hf"][:, cut])
            rows.append({"variant": f"probe_{layer}", "heldout_auroc": rank_auroc(real, fake),
                         f"heldout_auroc_first_{args.first}": rank_auroc(real[:args.first], fake[:args.first]),
                         "seconds_encode_all_layers": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    states = [v for v in variants if v.startswith(("transformer", "linear"))]
    if states:
        enc = HiddenStateEncoder(model, tok, layer=args.layer, **off, **kwargs)
        t0 = time.perf_counter()
        f = {k: encode(enc, part, key) for k, part, key in
             [("pr", pool, "real"), ("pf", pool, "fake"), ("hr", held, "real"), ("hf", held, "fake")]}
        print(json.dumps({"encode_seconds": round(time.perf_counter() - t0, 1), "texts": 2 * (len(pool) + len(held))}))
        for v in states:
            torch.manual_seed(0)
            d = MeanLinear(width) if v.startswith("linear") else Discriminator(width, width=256, layers=2, heads=4,
                                                                               dropout=0.1, pooling="mean")
            lr = 1e-3 if v.startswith("linear") else 1e-4

            def logits(i, d=d):
                out = d(torch.cat([f["pr"][0][i], f["pf"][0][i]]), torch.cat([f["pr"][1][i], f["pf"][1][i]]))
                return out[:len(i)], out[len(i):]

            rows += train_epochs(v, d, logits, len(pool), lambda d=d: (d(*f["hr"]), d(*f["hf"])), lr,
                                 "bce" if v.endswith("bce") else "bradley_terry", args)
    if "lm" in variants:
        torch.manual_seed(0)
        d = LMDiscriminator(load_model(args.model, dtype="float32"), layers=8, lora_rank=16, lora_alpha=32)
        tenc = TokenEncoder(model, tok, model_name=args.model, **kwargs)

        def score(part, key, i):
            return d(*tenc.encode([part[j]["prompt"] for j in i], [part[j][key] for j in i]))

        def held_scores():
            return tuple(torch.cat([score(held, key, range(s, min(s + 32, len(held)))) for s in range(0, len(held), 32)])
                         for key in ("real", "fake"))

        rows += train_epochs("lm", d, lambda i: (score(pool, "real", i.tolist()), score(pool, "fake", i.tolist())),
                             len(pool), held_scores, 1e-4, "bradley_terry", args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
