"""The training split as the trainers read it, checked before any model loads."""

from __future__ import annotations

from llmgan.config import RunConfig
from llmgan.errors import LlmganError

COLUMNS = ("prompt", "response")  # what training reads from a prepared split


def check_train_data(cfg: RunConfig):
    """data.path is a folder written by `llmgan prepare` with the split data.train_split, its columns
    `prompt` and `response`, and at least train.prompts_per_step rows. Cheap (the dataset is memory-mapped,
    nothing is tokenized): run it before any model loads. Returns the DatasetDict."""
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



def load_train_dataset(cfg: RunConfig, tokenizer):
    """The training split as TRL expects it: `prompt` (messages, the user message cut to
    data.max_prompt_tokens) and `response` (the real reply); and the split for sample generations."""
    ds = check_train_data(cfg)
    train = ds[cfg.data.train_split]
    if cfg.data.max_train_samples:
        train = train.shuffle(seed=cfg.train.seed).select(range(min(len(train), cfg.data.max_train_samples)))
    train = train.select_columns(list(COLUMNS))
    n = cfg.data.max_prompt_tokens
    train = train.map(lambda r: {"prompt": truncate_prompt(r["prompt"], tokenizer, n)})
    eval_rows = ds[cfg.data.eval_split] if cfg.data.eval_split in ds else train
    return train, eval_rows
