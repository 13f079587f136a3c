"""The training split as the trainers read it, checked before any model loads."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from llmgan.config import RunConfig
from llmgan.errors import LlmganError
from llmgan.io import DATA_CAPS_FILE

COLUMNS = ("prompt", "response")  # what training reads from a prepared split


def check_train_data(cfg: RunConfig, heldout: bool = True):
    """data.path is a folder written by `llmgan prepare` with the split data.train_split, its columns
    `prompt` and `response`, and at least train.prompts_per_step rows; with `heldout` (a run that trains D),
    also the split data.eval_split where discriminator.heldout_size asks for a held-out set. Cheap (the
    dataset is memory-mapped, nothing is tokenized): run it before any model loads. Returns the DatasetDict."""
    from llmgan.data import load_prepared

    if not cfg.data.path:
        raise LlmganError("data.path is empty: give the folder written by `llmgan prepare` (data.path=DIR)")
    ds = load_prepared(cfg.data.path)
    if cfg.data.train_split not in ds:
        raise LlmganError(f"split '{cfg.data.train_split}' not in {cfg.data.path}; splits: {', '.join(ds)}")
    split = ds[cfg.data.train_split]
    missing = [c for c in COLUMNS if c not in split.column_names]
    if missing:
        raise LlmganError(f"split '{cfg.data.train_split}' of {cfg.data.path} has no column {', '.join(missing)} "
                          f"(columns: {', '.join(split.column_names)}); prepare it with `llmgan prepare`")
    n = min(len(split), cfg.data.max_train_samples or len(split))
    if n < cfg.train.prompts_per_step:
        raise LlmganError(f"training split has {n} rows, fewer than train.prompts_per_step={cfg.train.prompts_per_step}")
    if heldout and cfg.discriminator.heldout_size and cfg.data.eval_split not in ds:
        # a held-out AUROC on training rows would measure memorisation, not what the judge sees
        raise LlmganError(f"discriminator.heldout_size={cfg.discriminator.heldout_size} needs the held-out split "
                          f"'{cfg.data.eval_split}' (data.eval_split), which {cfg.data.path} lacks (splits: "
                          f"{', '.join(ds)}); prepare the data with a validation split (`llmgan prepare`) or set "
                          f"discriminator.heldout_size=0")
    return ds


def truncate_prompt(messages: list[dict], tokenizer, max_tokens: int) -> list[dict]:
    """Cut the last user message so it has at most `max_tokens` tokens (keeps its beginning).

    The cut text is tokenized again by the trainer, so it must still fit then: a cut inside a character
    (a byte-level token holding half of it decodes to U+FFFD, which takes more tokens) moves back to the
    previous character boundary.
    """
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            content = m["content"]
            ids = tokenizer(content, add_special_tokens=False)["input_ids"]
            if len(ids) > max_tokens:
                text = ""
                for keep in range(max_tokens, 0, -1):
                    cand = tokenizer.decode(ids[:keep])
                    if "\ufffd" in cand and "\ufffd" not in content:
                        continue
                    if len(tokenizer(cand, add_special_tokens=False)["input_ids"]) <= max_tokens:
                        text = cand
                        break
                m["content"] = text
            break
    return out



def load_train_dataset(cfg: RunConfig, tokenizer, heldout: bool = True):
    """The training split as TRL expects it: `prompt` (messages, the user message cut to
    data.max_prompt_tokens) and `response` (the real reply); and the split for sample generations.
    `heldout`: as in `check_train_data` (False for SFT, which trains no D)."""
    ds = check_train_data(cfg, heldout)
    train = ds[cfg.data.train_split]
    if cfg.data.max_train_samples:
        train = train.shuffle(seed=cfg.train.seed).select(range(min(len(train), cfg.data.max_train_samples)))
    train = train.select_columns(list(COLUMNS))
    n = cfg.data.max_prompt_tokens
    train = train.map(lambda r: {"prompt": truncate_prompt(r["prompt"], tokenizer, n)})
    eval_rows = ds[cfg.data.eval_split] if cfg.data.eval_split in ds else train
    return train, eval_rows


# ------------------------------------------------------------------------------- caps from the data


def data_caps(cfg: RunConfig, tokenizer) -> Optional[dict]:
    """The response caps taken from the data (`data.response_cap_quantile` set; else None).

    cap = ceil(quantile q of the training responses' lengths in tokens, no special tokens). The generator
    may write cap + 1 new tokens (a cap-long reply and its end-of-turn token: `generation.max_new_tokens`)
    and the discriminator reads at most cap tokens of any response, real or generated
    (`discriminator.max_response_tokens`), so cutting a long human reply is no cue the fakes lack.
    `human_longer_share` is the share of training responses longer than the cap: what
    `generator/clipped_ratio` should stay near once the generator writes like the data.
    """
    import numpy as np

    q = cfg.data.response_cap_quantile
    if q is None:
        return None
    train = check_train_data(cfg, heldout=False)[cfg.data.train_split]  # the caps read the training split only
    if cfg.data.max_train_samples:
        train = train.shuffle(seed=cfg.train.seed).select(range(min(len(train), cfg.data.max_train_samples)))
    texts = [r if isinstance(r, str) else "" for r in train["response"]]
    lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])
    cap = max(1, int(math.ceil(float(np.quantile(lengths, q)))))
    return {"response_cap_quantile": q, "responses": int(len(lengths)), "cap_tokens": cap,
            "generation.max_new_tokens": cap + 1, "discriminator.max_response_tokens": cap,
            "human_longer_share": round(float((lengths > cap).mean()), 4),
            "response_tokens_mean": round(float(lengths.mean()), 2),
            "response_tokens_percentiles": {str(p): float(np.percentile(lengths, p)) for p in (50, 75, 90, 95, 99)}}


def apply_data_caps(cfg: RunConfig, caps: Optional[dict]) -> RunConfig:
    """cfg with the caps of `data_caps` (unchanged for None)."""
    import dataclasses

    if not caps:
        return cfg
    return dataclasses.replace(
        cfg, generation=dataclasses.replace(cfg.generation, max_new_tokens=int(caps["generation.max_new_tokens"])),
        discriminator=dataclasses.replace(cfg.discriminator,
                                          max_response_tokens=int(caps["discriminator.max_response_tokens"])))


def resolve_data_caps(cfg: RunConfig, run_dir: Path, *, write: bool = True, progress: bool = False) -> RunConfig:
    """`data_caps` for this run, written to RUN/data_caps.json (`write`), and the config that uses them."""
    from llmgan.io import write_json
    from llmgan.models import load_tokenizer

    if cfg.data.response_cap_quantile is None:
        return cfg
    caps = data_caps(cfg, load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code))
    if write:
        write_json(Path(run_dir) / DATA_CAPS_FILE, caps)
    if progress:
        print(f"caps from the data: {caps['response_cap_quantile']:g} quantile of {caps['responses']} training "
              f"responses = {caps['cap_tokens']} tokens (generation.max_new_tokens={caps['generation.max_new_tokens']}, "
              f"discriminator.max_response_tokens={caps['cap_tokens']}); {100 * caps['human_longer_share']:.1f}% of "
              f"the human responses are longer")
    return apply_data_caps(cfg, caps)
