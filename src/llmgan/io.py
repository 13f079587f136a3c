"""Files and the terminal, one copy each: atomic writes, output-path checks, JSONL/CSV rows, one-line
error text, progress that works with and without a terminal, and the chat-prompt helper.

Every command writes through these functions, so the rules hold everywhere:
- an output path is checked (`check_output_path`) before any model loads or any work starts;
- a file or folder is written next to its target and renamed into place, so an interrupted or failed
  write (a full disk) leaves no partial file, and the error names the path;
- outputs get the user's umask (files 0666 & ~umask, folders 0777 & ~umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from llmgan.errors import LlmganError

# ------------------------------------------------------------------------------------------ text


def one_line(text: str) -> str:
    """Escape line breaks and other unprintable characters, so an error message stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def last_user_message(messages: Any) -> str:
    """The content of the last user turn of a conversational prompt ("" without one); a plain string is
    returned as it is."""
    if isinstance(messages, str):
        return messages
    return next((m["content"] for m in reversed(list(messages)) if m["role"] == "user"), "")


# ---------------------------------------------------------------------------------------- errors


def _write_errors() -> tuple:
    errors: list = [OSError, RuntimeError]  # torch.save reports a full disk as a RuntimeError
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


WRITE_ERRORS = _write_errors()
"""What a failed write raises: OSError (open/write/rename), RuntimeError (torch.save), SafetensorError."""


def is_write_error(exc: BaseException) -> bool:
    """A failed write: one of WRITE_ERRORS, or the plain Exception that Rust-backed savers (tokenizers)
    raise with an 'os error N' message."""
    if isinstance(exc, WRITE_ERRORS):
        return True
    return type(exc) is Exception and "os error" in str(exc)


def write_error(exc: BaseException, folder: Path) -> str:
    """One line on why a write into `folder` failed, with the free space left there."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [type(exc).__name__])[0]
    try:
        free = shutil.disk_usage(folder).free
        why += f" (free space there: {free / 2**20:.0f} MiB)"
    except OSError:
        pass
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why += "; free some space"
    elif isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why += "; the folder is not writable"
    return why


# ----------------------------------------------------------------------------------- output paths


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_path(path: str | Path, *, kind: str = "file", suffixes: Optional[Sequence[str]] = None,
                      what: str = "output") -> Path:
    """Check, before any work, that `path` can be written as a `kind` ("file" or "dir").

    The parent must exist or be creatable (its nearest existing ancestor is a folder, writable), no
    ancestor may be a file, a file target must not be an existing folder and a folder target must not be
    an existing file; `suffixes` (lower case, with the dot) limits a file's suffix. Raises LlmganError
    with one line that names the path and what to do. Creates nothing.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    p = Path(path)
    if str(path) == "":
        raise LlmganError(f"{what} path is empty")
    if suffixes and p.suffix.lower() not in suffixes:
        raise LlmganError(f"{what} {p} must end in {' or '.join(suffixes)}")
    if kind == "file" and p.is_dir():
        raise LlmganError(f"{what} {p} is a folder; give a file name (for example {p / ('out' + (suffixes[0] if suffixes else ''))})")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise LlmganError(f"{what} {p} is a file; give a folder")
    base = _nearest_existing(p.parent if p != p.parent else p)
    if base.exists() and not base.is_dir():
        raise LlmganError(f"{what} {p}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise LlmganError(f"{what} {p}: the folder {base} is not writable; choose another path")
    if p.exists() and not os.access(p, os.W_OK):
        raise LlmganError(f"{what} {p} exists and is not writable; choose another path")
    return p


# ----------------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the output the user's usual permissions."""
    mode = (0o777 if directory else 0o666) & ~_umask()
    os.chmod(path, mode)
    if directory:
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~_umask())


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write a file via a temporary file in the same folder and a rename. A failed write (disk full,
    read-only folder) leaves no partial file and raises LlmganError naming the path."""
    path = Path(path)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def dumps_json(obj: Any) -> str:
    """Readable JSON: indented, UTF-8 as is, and NaN refused (it is not JSON)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    return write_atomic(path, dumps_json(obj))


DATA_CAPS_FILE = "data_caps.json"  # RUN/data_caps.json: the caps a run took from its data (data.response_cap_quantile)


def read_data_caps(run_dir: str | Path) -> Optional[dict]:
    """RUN/data_caps.json, or None when the run used fixed caps. Here, not in training, because `llmgan
    generate` reads it too (a generator folder of such a run is sampled with the run's cap)."""
    path = Path(run_dir) / DATA_CAPS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@contextlib.contextmanager
def _atomic(path: str | Path, directory: bool, replace: bool = True) -> Iterator[Path]:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise LlmganError(f"could not write {path}: {write_error(exc, _nearest_existing(path.parent))}") from None
    try:
        yield tmp
        _apply_umask(tmp, directory=directory)
        if directory and replace and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as exc:
        if is_write_error(exc) and not isinstance(exc, LlmganError):
            raise LlmganError(f"could not write {path}: {write_error(exc, path.parent)}") from None
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_file(path: str | Path):
    """Context manager: yield a temporary path beside `path`; on success it replaces `path` (user's
    umask), on any error it is removed. Write errors become one LlmganError line naming `path`."""
    return _atomic(path, directory=False)


def atomic_dir(path: str | Path, *, replace: bool = True):
    """Context manager: yield a temporary folder beside `path`; on success it takes the place of `path`
    (an existing folder there is removed first when `replace`), on any error it is removed. Write errors
    become one LlmganError line naming `path`."""
    return _atomic(path, directory=True, replace=replace)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (a data card's source hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_rows(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows as JSONL or CSV (by suffix), atomically."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise LlmganError(f"output {p} must end in .jsonl or .csv")
    with atomic_file(p) as tmp:
        if suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            import pandas as pd

            pd.DataFrame(list(rows)).to_csv(tmp, index=False)
    return p


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line (a log: metrics, faults); flushed so a crash keeps every finished line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


# --------------------------------------------------------------------------------------- progress


class Progress:
    """Progress for long work: rich bars on a terminal, and without one (a log file, a batch job) a plain
    line `label: done/total (pct%) elapsed` on stderr every `every_percent` percent. A no-op when disabled.

    Use as a context manager; `add(label, total)` returns a task, `advance(task, n)` moves it, `note(task, text)`
    sets a short status shown beside it (live on a terminal, on the next plain line otherwise).
    """

    def __init__(self, enabled: bool = True, *, transient: bool = True, every_percent: int = 10,
                 stream=None, force_plain: bool = False):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.plain = force_plain or not getattr(self.stream, "isatty", lambda: False)()
        self.every = max(1, int(every_percent))
        self._rich = None
        self._tasks: dict[int, dict] = {}
        if enabled and not self.plain:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                      console=Console(file=self.stream), transient=transient)

    def __enter__(self) -> "Progress":
        if self._rich:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._rich:
            self._rich.stop()

    def add(self, label: str, total: int) -> Optional[int]:
        if not self.enabled:
            return None
        if self._rich:
            return self._rich.add_task(label, total=total, note="")
        task = len(self._tasks)
        self._tasks[task] = {"label": label, "total": max(int(total), 0), "done": 0, "shown": -1,
                             "t0": time.perf_counter(), "note": ""}
        return task

    def note(self, task: Optional[int], text: str) -> None:
        if not self.enabled or task is None:
            return
        if self._rich:
            self._rich.update(task, note=text)
        else:
            self._tasks[task]["note"] = text

    def advance(self, task: Optional[int], n: int = 1) -> None:
        if not self.enabled or task is None:
            return
        if self._rich:
            self._rich.advance(task, n)
            return
        t = self._tasks[task]
        t["done"] += n
        pct = 100 if t["total"] == 0 else min(100, int(100 * t["done"] / t["total"]))
        step = pct // self.every
        if step > t["shown"] and (pct > 0 or t["done"] == t["total"]):
            t["shown"] = step
            note = f"; {t['note']}" if t["note"] else ""
            print(f"{t['label']}: {t['done']}/{t['total']} ({pct}%) {time.perf_counter() - t['t0']:.0f} s{note}",
                  file=self.stream, flush=True)

    def __bool__(self) -> bool:
        return self.enabled


def stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


# ------------------------------------------------------------------------ optimizer state in safetensors

def flatten_optimizer_state(state: dict) -> tuple[dict[str, Any], dict]:
    """torch optimizer state_dict -> (tensors for safetensors, JSON-able rest). Inverse: `unflatten_optimizer_state`."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict] = {}
    for pid, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, Any], meta: dict) -> dict:
    """(tensors, meta) of `flatten_optimizer_state` -> the torch optimizer state_dict again."""
    per_param: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            per_param.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(pid), {}).update(values)
    return {"state": per_param, "param_groups": meta["param_groups"]}
