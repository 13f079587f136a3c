"""Build instruction datasets from TWON-style files: `llmgan prepare`.

Reads parquet, CSV or JSONL; turns each row into a conversational prompt (system + user message)
and the real human response; cleans (strip whitespace, unescape HTML entities, drop empty responses,
drop exact duplicate pairs, optional maximum response length in tokens); splits into
train/validation/test *grouped by prompt*, so that no post appears in two splits; writes a Hugging
Face `datasets` DatasetDict to disk with a JSON card (`llmgan_card.json`: source files and hashes,
counts, filters, split seed, template) and prints a summary table.

Built-in tasks for the two TWON layouts:
  reply  columns post, reply        "write a reply to this post"
  post   columns annotation, full_text  "write a post about this topic"
Anything else: --prompt-column, --response-column, --system-prompt, or --template FILE whose text
has {placeholders} naming columns (e.g. "Reply to {post}").

Several input files are concatenated before the grouped split. Ready-made splits can be given with
--test-file / --validation-file; their overlap with the training posts is then reported (warning with
the count) and can be removed with --drop-overlap.

Runs on one CPU in seconds; no GPU involved. Output is written to a temporary folder and renamed,
so an error never leaves a half-written dataset.

Example:
  llmgan prepare --task reply ../shared/data/twon/prelim.train.parquet -o data/prelim-reply
"""

from __future__ import annotations

import argparse
import html
import json
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from llmgan.errors import LlmganError
from llmgan.io import atomic_dir, check_output_path, sha256_file

CARD_NAME = "llmgan_card.json"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Task:
    """How a table becomes (prompt, response) pairs."""

    name: str
    prompt_column: str
    response_column: str
    system_prompt: str
    template: str = "{prompt}"  # the user message; {prompt} is the prompt column, other {names} are columns


TASKS = {
    "reply": Task("reply", "post", "reply", "You are a social media user. Write a reply to the following post."),
    "post": Task("post", "annotation", "full_text",
                 "You are a social media user. Write a post about the following topic."),
}


# ---------------------------------------------------------------------------------------------
# Reading


def read_table(path: str | Path):
    """Read parquet, CSV, JSONL or JSON into a DataFrame; LlmganError for missing/unreadable files."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise LlmganError(f"input file not found: {p}")
    if p.is_dir():
        raise LlmganError(f"input {p} is a folder; give a .parquet, .csv or .jsonl file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p)
        elif suffix in (".csv", ".tsv"):
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", dtype=object, keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True, dtype=False)
        elif suffix == ".json":
            df = pd.read_json(p, dtype=False)
        else:
            raise LlmganError(f"unknown format of {p} (suffix '{suffix}'); use .parquet, .csv, .tsv or .jsonl")
    except LlmganError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LlmganError(f"could not read {p} as {suffix.lstrip('.')}: {first}") from None
    if not isinstance(df, pd.DataFrame):
        raise LlmganError(f"{p} does not hold a table of rows")
    df.columns = [str(c) for c in df.columns]
    return df


def template_fields(template: str) -> list[str]:
    """Placeholder names in a str.format template (raises LlmganError on a malformed template)."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise LlmganError(f"template is malformed ({exc}); use {{column}} placeholders, {{{{ for a literal brace") from None
    for n in names:
        if not n or not n.isidentifier():
            raise LlmganError(f"template placeholder '{{{n}}}' must be a column name")
    return names


def _show(name: str) -> str:
    """A column name for a one-line message: as is when printable, else quoted with escapes."""
    return name if name.isprintable() else repr(name)


def _check_columns(df, needed: list[str], source: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise LlmganError(f"{source}: missing column(s) {', '.join(map(_show, missing))}; found columns: "
                          f"{', '.join(map(_show, df.columns)) or '(none)'}; pick others with --prompt-column/--response-column or --task")


def _check_text(df, column: str, source: str) -> None:
    """Every non-null value in a text column must be a string."""
    import pandas as pd

    for i, v in enumerate(df[column].tolist()):
        if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA:
            continue
        if not isinstance(v, str):
            raise LlmganError(f"{source}: column '{column}' must hold text, but row {i} holds {type(v).__name__} "
                              f"{str(v)[:40]!r}; convert the column to strings")


def clean_text(v) -> str:
    if not isinstance(v, str):
        return ""
    return html.unescape(v).strip()


# ---------------------------------------------------------------------------------------------
# Cleaning and splitting (pure functions over lists, easy to test)


@dataclass
class CleanReport:
    rows_read: int = 0
    dropped: dict = field(default_factory=dict)
    kept: int = 0


def clean_pairs(prompts: list, responses: list, max_response_tokens: Optional[int] = None,
                count_tokens=None, scopes: Optional[list] = None) -> tuple[list[int], CleanReport]:
    """Indices of rows kept after cleaning, and the counts dropped by reason.

    Strips whitespace and unescapes HTML entities (the caller applies `clean_text` to the values),
    drops empty prompts, empty responses, exact duplicate (prompt, response) pairs, and responses
    longer than `max_response_tokens` (counted with `count_tokens(list[str]) -> list[int]`).
    Duplicates are looked for within each scope (`scopes[i]`, e.g. the ready-made split a row comes
    from), so a test row that repeats a training pair is reported as overlap, not silently dropped.
    """
    report = CleanReport(rows_read=len(prompts))
    drop = {"empty response": 0, "empty prompt": 0, "duplicate pair": 0, "response too long": 0}
    seen = set()
    kept = []
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not r:
            drop["empty response"] += 1
            continue
        if not p:
            drop["empty prompt"] += 1
            continue
        key = (scopes[i] if scopes is not None else None, p, r)
        if key in seen:
            drop["duplicate pair"] += 1
            continue
        seen.add(key)
        kept.append(i)
    if max_response_tokens is not None and kept:
        lengths = count_tokens([responses[i] for i in kept])
        too_long = {i for i, n in zip(kept, lengths) if n > max_response_tokens}
        drop["response too long"] = len(too_long)
        kept = [i for i in kept if i not in too_long]
    report.dropped = drop
    report.kept = len(kept)
    return kept, report


def grouped_split(groups: list[str], fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Assign row indices to splits so that all rows of a group (prompt) land in the same split.

    Groups are shuffled with `seed`, then filled into splits in order until each split holds about
    its fraction of the *rows*. Returns split name -> sorted row indices.
    """
    import numpy as np

    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    keys = list(order)
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    total = len(groups)
    names = [n for n in fractions if fractions[n] > 0]
    targets = {n: fractions[n] * total for n in names}
    out: dict[str, list[int]] = {n: [] for n in fractions}
    # fill the small splits first (validation, test), train takes the rest, and at least one group
    # (a handful of rows must not leave the training split empty)
    fill = [n for n in names if n != "train"] + (["train"] if "train" in names else [])
    reserve = 1 if "train" in names else 0
    k = 0
    for n in fill[:-1]:
        while k < len(keys) - reserve and len(out[n]) < targets[n]:
            out[n].extend(order[keys[k]])
            k += 1
    for key in keys[k:]:
        out[fill[-1]].extend(order[key])
    return {n: sorted(v) for n, v in out.items()}


# ---------------------------------------------------------------------------------------------
# The whole job


@dataclass
class PrepareOptions:
    inputs: list[str]
    output: str
    task: Optional[str] = None
    prompt_column: Optional[str] = None
    response_column: Optional[str] = None
    system_prompt: Optional[str] = None
    template_file: Optional[str] = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    test_file: Optional[str] = None
    validation_file: Optional[str] = None
    drop_overlap: bool = False
    max_response_tokens: Optional[int] = None
    tokenizer: Optional[str] = None
    seed: int = 0
    overwrite: bool = False


def resolve_task(opts: PrepareOptions) -> Task:
    base = TASKS.get(opts.task) if opts.task else None
    if opts.task and base is None:
        raise LlmganError(f"unknown task '{opts.task}'; built-in tasks: {', '.join(TASKS)}")
    if base is None and not (opts.prompt_column and opts.response_column):
        raise LlmganError("give --task reply|post, or both --prompt-column and --response-column")
    template = "{prompt}"
    if opts.template_file:
        tp = Path(opts.template_file)
        if not tp.is_file():
            raise LlmganError(f"template file not found: {tp}")
        template = tp.read_text().strip()
    return Task(
        name=opts.task or "custom",
        prompt_column=opts.prompt_column or base.prompt_column,
        response_column=opts.response_column or base.response_column,
        system_prompt=opts.system_prompt if opts.system_prompt is not None else (base.system_prompt if base else ""),
        template=template if opts.template_file else (base.template if base else "{prompt}"),
    )


def _rows_from(df, task: Task, source: str) -> tuple[list[str], list[str], list[dict]]:
    """(user prompt texts, responses, source records) of one table, values cleaned."""
    fields = template_fields(task.template)
    needed = [task.prompt_column, task.response_column] + [f for f in fields if f != "prompt"]
    _check_columns(df, list(dict.fromkeys(needed)), source)
    for c in dict.fromkeys(needed):
        _check_text(df, c, source)
    records = df.to_dict("records")
    prompts, responses = [], []
    for rec in records:
        values = {f: clean_text(rec.get(f)) for f in fields if f != "prompt"}
        values["prompt"] = clean_text(rec.get(task.prompt_column))
        prompts.append(task.template.format(**values).strip() if values["prompt"] else "")
        responses.append(clean_text(rec.get(task.response_column)))
    return prompts, responses, records


def _source_record(rec: dict) -> dict:
    """Original columns kept beside the prompt (renamed when they collide with ours)."""
    out = {}
    for k, v in rec.items():
        key = f"source_{k}" if k in ("prompt", "response", "prompt_text", "split") else k
        out[key] = v if isinstance(v, str) else ("" if v is None else str(v))
    return out


def prepare(opts: PrepareOptions, console=None) -> dict:
    """Run the whole preparation; returns the card (also written as llmgan_card.json)."""
    import datasets
    from datasets import Dataset, DatasetDict

    datasets.disable_progress_bars()

    task = resolve_task(opts)
    if not opts.inputs:
        raise LlmganError("give at least one input file")
    for name, frac in (("--validation-fraction", opts.validation_fraction), ("--test-fraction", opts.test_fraction)):
        if not 0 <= frac <= 1:
            raise LlmganError(f"{name} must be between 0 and 1 (got {frac})")
    ready_made = {"test": opts.test_file, "validation": opts.validation_file}
    fractions = {
        "validation": 0.0 if opts.validation_file else opts.validation_fraction,
        "test": 0.0 if opts.test_file else opts.test_fraction,
    }
    if sum(fractions.values()) > 1:
        raise LlmganError("--validation-fraction + --test-fraction must not exceed 1")
    fractions = {"train": 1 - sum(fractions.values()), **fractions}
    out_dir = check_output_path(opts.output, kind="dir")
    if out_dir.exists() and not opts.overwrite:
        raise LlmganError(f"output folder {out_dir} exists; pass --overwrite or choose another -o")

    # 1. read and clean every source; the generated split's sources first, then ready-made ones
    sources = [(p, None) for p in opts.inputs] + [(p, s) for s, p in ready_made.items() if p]
    prompts, responses, records, fixed_split, hashes = [], [], [], [], {}
    for path, split in sources:
        df = read_table(path)
        p, r, recs = _rows_from(df, task, str(path))
        prompts += p
        responses += r
        records += recs
        fixed_split += [split] * len(p)
        hashes[str(path)] = {"sha256": sha256_file(Path(path)), "rows": len(p), "split": split or "grouped"}

    count_tokens = None
    if opts.max_response_tokens is not None:
        from llmgan.models import load_tokenizer

        tok = load_tokenizer(opts.tokenizer)
        count_tokens = lambda texts: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731

    kept, report = clean_pairs(prompts, responses, opts.max_response_tokens, count_tokens, scopes=fixed_split)
    if not kept:
        raise LlmganError(f"no usable rows left after cleaning ({', '.join(f'{k}: {v}' for k, v in report.dropped.items() if v)}); "
                          f"check the columns '{task.prompt_column}' and '{task.response_column}'")

    # 2. grouped split of the rows without a fixed split
    free = [i for i in kept if fixed_split[i] is None]
    assignment = grouped_split([prompts[i] for i in free], fractions, opts.seed)
    split_rows = {s: [free[j] for j in idx] for s, idx in assignment.items()}
    for s in SPLITS:
        split_rows.setdefault(s, [])
        split_rows[s] += [i for i in kept if fixed_split[i] == s]

    # 3. overlap between ready-made splits and training prompts: warn, optionally drop
    overlap = {}
    for s in ("validation", "test"):
        if ready_made[s]:
            others = [i for o in SPLITS if o != s for i in split_rows[o]]
            other_prompts = {prompts[i] for i in others}
            other_pairs = {(prompts[i], responses[i]) for i in others}
            shared = {prompts[i] for i in split_rows[s]} & other_prompts
            pairs = sum((prompts[i], responses[i]) in other_pairs for i in split_rows[s])
            overlap[s] = {"prompts": len(shared), "identical_pairs": pairs}
            if shared:
                msg = (f"{len(shared)} of {len({prompts[i] for i in split_rows[s]})} prompts in the ready-made {s} split "
                       f"({ready_made[s]}) also occur in the other splits ({pairs} of its {len(split_rows[s])} rows are "
                       "identical prompt-response pairs)")
                if opts.drop_overlap:
                    before = len(split_rows[s])
                    split_rows[s] = [i for i in split_rows[s] if prompts[i] not in other_prompts]
                    msg += f"; dropped {before - len(split_rows[s])} {s} rows (--drop-overlap)"
                else:
                    msg += f"; pass --drop-overlap to remove them from the {s} split"
                warnings.warn(msg, stacklevel=2)
                if console is not None:
                    console.print(f"[yellow]warning:[/yellow] {msg}")

    # 4. build and write the DatasetDict atomically
    def rows(idx):
        # sources may have different extra columns: take their union, "" where a row's file lacks one
        src = [_source_record(records[i]) for i in idx]
        return {
            "prompt": [[{"role": "system", "content": task.system_prompt}, {"role": "user", "content": prompts[i]}]
                       if task.system_prompt else [{"role": "user", "content": prompts[i]}] for i in idx],
            "response": [responses[i] for i in idx],
            "prompt_text": [prompts[i] for i in idx],
            **{k: [r.get(k, "") for r in src] for k in dict.fromkeys(k for r in src for k in r)},
        }

    # empty splits are left out of the folder (datasets cannot reload an empty split); the card lists them
    ds = DatasetDict({sname: Dataset.from_dict(rows(split_rows[sname])) for sname in SPLITS if split_rows[sname]})
    import numpy as np

    resp_chars = np.array([len(responses[i]) for i in kept])
    resp_words = np.array([len(responses[i].split()) for i in kept])
    card = {
        "task": task.name,
        "prompt_column": task.prompt_column,
        "response_column": task.response_column,
        "system_prompt": task.system_prompt,
        "template": task.template,
        "sources": hashes,
        "rows_read": report.rows_read,
        "dropped": report.dropped,
        "rows_kept": report.kept,
        "filters": ["strip whitespace", "unescape HTML entities", "drop empty responses", "drop empty prompts",
                    "drop exact duplicate pairs"] + ([f"max response tokens {opts.max_response_tokens}"]
                                                     if opts.max_response_tokens is not None else []),
        "split_seed": opts.seed,
        "split_fractions": fractions,
        "splits": {s: {"rows": len(split_rows[s]), "prompts": len({prompts[i] for i in split_rows[s]})} for s in SPLITS},
        "ready_made_overlap": overlap,
        "response_chars_percentiles": {str(q): float(np.percentile(resp_chars, q)) for q in (5, 25, 50, 75, 95, 100)},
        "response_words_percentiles": {str(q): float(np.percentile(resp_words, q)) for q in (5, 25, 50, 75, 95, 100)},
    }
    with atomic_dir(out_dir) as tmp:
        ds.save_to_disk(str(tmp))
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2, ensure_ascii=False))
    return card


def load_prepared(path: str | Path):
    """Load a folder written by `llmgan prepare` (DatasetDict) with a clear error otherwise."""
    from datasets import load_from_disk

    p = Path(path)
    if not p.is_dir():
        raise LlmganError(f"prepared dataset not found: {p}; create it with `llmgan prepare`")
    if not (p / CARD_NAME).is_file() and not (p / "dataset_dict.json").is_file():
        raise LlmganError(f"{p} is not a dataset written by `llmgan prepare` (no {CARD_NAME})")
    return load_from_disk(str(p))


def print_summary(card: dict, out_dir: str, console) -> None:
    from rich.table import Table

    t = Table(title=f"llmgan prepare: {card['task']} -> {out_dir}")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("rows read", str(card["rows_read"]))
    for reason, n in card["dropped"].items():
        t.add_row(f"dropped: {reason}", str(n))
    t.add_row("rows kept", str(card["rows_kept"]))
    for s, v in card["splits"].items():
        t.add_row(f"split {s}", f"{v['rows']} rows / {v['prompts']} prompts")
    pc = card["response_chars_percentiles"]
    pw = card["response_words_percentiles"]
    t.add_row("response chars p5/p25/p50/p75/p95/max", "/".join(f"{pc[q]:.0f}" for q in ("5", "25", "50", "75", "95", "100")))
    t.add_row("response words p5/p25/p50/p75/p95/max", "/".join(f"{pw[q]:.0f}" for q in ("5", "25", "50", "75", "95", "100")))
    console.print(t)


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="input file(s): .parquet, .csv, .tsv or .jsonl (concatenated)")
    p.add_argument("-o", "--output", required=True, help="output folder (a datasets DatasetDict + llmgan_card.json)")
    p.add_argument("--task", choices=sorted(TASKS), help="built-in task: reply (post -> reply) or post (annotation -> full_text)")
    p.add_argument("--prompt-column", help="column holding the prompt text (overrides the task's)")
    p.add_argument("--response-column", help="column holding the real response (overrides the task's)")
    p.add_argument("--system-prompt", help="system message (overrides the task's; '' for none)")
    p.add_argument("--template", dest="template_file", help="file with the user-message template, {column} placeholders")
    p.add_argument("--validation-fraction", type=float, default=0.1, help="share of rows for validation (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of rows for test (default 0.1)")
    p.add_argument("--test-file", help="ready-made test split file (its overlap with train is reported)")
    p.add_argument("--validation-file", help="ready-made validation split file")
    p.add_argument("--drop-overlap", action="store_true", help="drop ready-made held-out rows whose prompt occurs in train")
    p.add_argument("--max-response-tokens", type=int, help="drop responses longer than this many tokens")
    p.add_argument("--tokenizer", help="tokenizer for --max-response-tokens (default: the embedded default model's)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=False)
    opts = PrepareOptions(
        inputs=args.inputs, output=args.output, task=args.task, prompt_column=args.prompt_column,
        response_column=args.response_column, system_prompt=args.system_prompt, template_file=args.template_file,
        validation_fraction=args.validation_fraction, test_fraction=args.test_fraction, test_file=args.test_file,
        validation_file=args.validation_file, drop_overlap=args.drop_overlap,
        max_response_tokens=args.max_response_tokens, tokenizer=args.tokenizer, seed=args.seed, overwrite=args.overwrite)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlap warnings are printed by prepare() through the console
        card = prepare(opts, console=console)
    print_summary(card, args.output, console)
    return 0
