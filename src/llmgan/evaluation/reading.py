"""Reading the judge's input: a JSONL, CSV or parquet file with a prompt, a real and a generated column.

The table itself is read by `llmgan.data.read_table` (the one table reader, shared with `prepare`);
this module picks the columns, turns chat-message prompts into their last user message and refuses
what cannot be judged, each with one line that says what to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmgan.errors import LlmganError
from llmgan.io import last_user_message, one_line


def prompt_text(value: Any) -> Any:
    """A prompt string; a list of chat messages (or its JSON text) becomes its last user message's content."""
    if isinstance(value, str):
        s = value.lstrip()
        if not (s.startswith("[{") and '"role"' in s):
            return value
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if not (isinstance(parsed, list) and all(isinstance(x, dict) and "role" in x for x in parsed)):
            return value
        value = parsed
    if hasattr(value, "tolist") and not isinstance(value, dict):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and all(isinstance(x, dict) for x in value):
        return str(last_user_message([{"role": x.get("role"), "content": x.get("content", "")} for x in value]))
    return value


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def read_pairs(path: str | Path, *, prompt_column: str = "prompt", real_column: str = "real",
               generated_column: str = "generated") -> tuple[list[str], list[str], list[str]]:
    """(prompts, real, generated) from a JSONL, CSV or parquet file; LlmganError (one line) on bad input."""
    try:
        return _read_pairs(Path(path), prompt_column, real_column, generated_column)
    except LlmganError as exc:
        raise LlmganError(one_line(str(exc))) from None


def _read_pairs(p: Path, prompt_column: str, real_column: str, generated_column: str):
    from llmgan.data import read_table

    if not p.exists():
        raise LlmganError(f"{p}: no such file")
    if p.is_dir():
        raise LlmganError(f"{p} is a folder, not a file; give the JSONL, CSV or parquet file of `llmgan generate`")
    if p.stat().st_size == 0:
        raise LlmganError(f"{p} is empty")
    if p.suffix.lower() not in (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet"):
        raise LlmganError(f"{p}: unsupported file type '{p.suffix.lower()}'; use .jsonl, .csv or .parquet")
    df = read_table(p)
    if len(df) == 0:
        raise LlmganError(f"{p} has no rows")
    flags = {prompt_column: "--prompt-column", real_column: "--real-column", generated_column: "--generated-column"}
    for col, flag in flags.items():
        if col not in df.columns:
            raise LlmganError(f"{p} has no column '{col}' (columns found: {', '.join(map(str, df.columns)) or 'none'}); "
                              f"choose one with {flag}")
    out = []
    for col in (prompt_column, real_column, generated_column):
        values = df[col].tolist()
        if col == prompt_column:
            values = [prompt_text(v) for v in values]
        missing = [i for i, v in enumerate(values) if _missing(v)]
        if missing:
            raise LlmganError(f"{p}: {len(missing)} of {len(values)} rows have no '{col}' value (first: row "
                              f"{missing[0] + 1}); every row needs a prompt, a real and a generated response")
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:  # as `llmgan prepare`: numbers, lists, ... are not text, and "0", "1" is no reply
            v = values[bad]
            raise LlmganError(f"{p}: column '{col}' must hold text, but row {bad + 1} holds {type(v).__name__} "
                              f"{str(v)[:40]!r}; convert the column to strings (or choose another with "
                              f"{flags[col]})")
        out.append(values)
    return out[0], out[1], out[2]
