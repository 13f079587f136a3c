"""What a new user hit (issue 16): output paths checked before any work, clean interruption, devices,
permissions, progress without a terminal, help text, figure names, broken characters, and the one
shared write path (llmgan.io). Each test failed before its fix."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEMO_FILE, REPO
from llmgan import io
from llmgan.errors import LlmganError

READ_ONLY = Path("/proc/sys")  # a folder nobody, root included, may create files in


def llmgan(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "llmgan", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, **kw)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The shared output-path check


def test_check_output_path_names_each_problem(tmp_path):
    a_file = tmp_path / "some_file"
    a_file.write_text("x")
    a_dir = tmp_path / "existing_dir.jsonl"
    a_dir.mkdir()
    with pytest.raises(LlmganError, match="some_file is a file, not a folder"):
        io.check_output_path(a_file / "g.jsonl")
    with pytest.raises(LlmganError, match="existing_dir.jsonl is a folder"):
        io.check_output_path(a_dir)
    with pytest.raises(LlmganError, match="is a file; give a folder"):
        io.check_output_path(a_file, kind="dir")
    with pytest.raises(LlmganError, match=r"must end in \.jsonl or \.csv"):
        io.check_output_path(tmp_path / "g.txt", suffixes=(".jsonl", ".csv"))
    # a missing parent that can be created is fine, and nothing is created by the check
    assert io.check_output_path(tmp_path / "new" / "deeper" / "g.jsonl") == tmp_path / "new" / "deeper" / "g.jsonl"
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.access(READ_ONLY, os.W_OK), reason="/proc/sys is writable here")
def test_check_output_path_read_only_folder():
    with pytest.raises(LlmganError, match="not writable"):
        io.check_output_path(READ_ONLY / "ev", kind="dir")


def test_commands_check_the_output_before_any_work(tmp_path):
    """generate, prepare and plot refuse a bad -o at once: before the dataset, model or run is read
    (the dataset and run given here do not exist, so a later check would name them instead)."""
    (tmp_path / "some_file").write_text("x")
    (tmp_path / "existing_dir.jsonl").mkdir()
    missing = tmp_path / "no-such-dataset"
    cases = [
        (["generate", missing, "--limit", "8", "-o", tmp_path / "some_file" / "g.jsonl"], "is a file, not a folder"),
        (["generate", missing, "-o", tmp_path / "existing_dir.jsonl"], "is a folder"),
        (["prepare", "--task", "reply", DEMO_FILE, "-o", tmp_path / "some_file" / "ds"], "is a file, not a folder"),
        (["plot", missing, "-o", tmp_path / "some_file" / "p.png"], "is a file, not a folder"),
    ]
    if not os.access(READ_ONLY, os.W_OK):
        cases += [(["generate", missing, "-o", READ_ONLY / "g.jsonl"], "not writable"),
                  (["prepare", "--task", "reply", DEMO_FILE, "-o", READ_ONLY / "ds"], "not writable"),
                  (["plot", missing, "-o", READ_ONLY / "p.png"], "not writable")]
    for args, expected in cases:
        line = one_error_line(llmgan(*args))
        assert expected in line, (args, line)
        assert "no-such-dataset" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing_dir.jsonl", "some_file"]


def test_device_without_cuda_is_one_line(tmp_path, demo_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = one_error_line(llmgan("generate", demo_data, "-o", tmp_path / "g.jsonl", "--device", "cuda"))
    assert "no CUDA device is available" in line and "--device cpu" in line
    assert not (tmp_path / "g.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# Writes: atomic, the user's umask, a full disk


def test_failed_write_leaves_no_partial_file_and_names_the_path(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(LlmganError, match=f"could not write {target}: No space left on device"):
        with io.atomic_file(target) as tmp:
            tmp.write_text("half a row")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []
    folder = tmp_path / "ds"
    with pytest.raises(LlmganError, match=f"could not write {folder}"):
        with io.atomic_dir(folder) as tmp:
            (tmp / "part").write_text("x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_users_umask(tmp_path):
    from llmgan.data import PrepareOptions, prepare

    old = os.umask(0o022)
    try:
        io.write_rows([{"a": 1}], tmp_path / "rows.jsonl")
        io.write_atomic(tmp_path / "r.md", "x")
        prepare(PrepareOptions(inputs=[str(DEMO_FILE)], output=str(tmp_path / "ds"), task="reply"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "rows.jsonl").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "r.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == 0o755
    for p in (tmp_path / "ds").rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


# ---------------------------------------------------------------------------------------------
# Progress without a terminal


def test_progress_without_a_terminal_prints_plain_lines():
    import io as stdio

    buf = stdio.StringIO()
    with io.Progress(True, stream=buf, every_percent=25) as bar:
        task = bar.add("generating", 8)
        for _ in range(8):
            bar.advance(task)
    lines = buf.getvalue().splitlines()
    # the first finished item (so a log shows the work started), then every 25 %
    assert [line.split(" (")[0] for line in lines] == ["generating: 1/8", "generating: 2/8", "generating: 4/8",
                                                       "generating: 6/8", "generating: 8/8"], lines
    assert "(100%)" in lines[-1]
    silent = stdio.StringIO()
    with io.Progress(False, stream=silent) as bar:
        bar.advance(bar.add("x", 3), 3)
    assert silent.getvalue() == ""


def test_progress_note_is_shown_beside_the_count_in_plain_lines_and_on_a_terminal():
    import io as stdio

    from llmgan.training.trainer import progress_note

    row = {"step": 9, "discriminator/accuracy": 0.625, "generator/reward_mean": -0.70512, "generator/kl": 0.00213,
           "generator/completion_length": float("nan"), "timing/step": 60.0}
    note = progress_note(row)
    assert note == "step 9: D acc 0.62, reward -0.705, KL 0.0021"  # a NaN is left out, timing is not shown
    assert progress_note({"step": 1, "timing/step": 3.0}) == ""
    buf = stdio.StringIO()
    with io.Progress(True, stream=buf, every_percent=50) as bar:
        task = bar.add("train", 2)
        bar.note(task, note)
        bar.advance(task)
    assert buf.getvalue().splitlines()[0].endswith("s; " + note), buf.getvalue()

    class Terminal(stdio.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    with io.Progress(True, stream=term, transient=False) as bar:
        task = bar.add("train", 2)
        bar.note(task, note)
        bar.advance(task, 2)
    assert "D acc 0.62" in term.getvalue()


# ---------------------------------------------------------------------------------------------
# Interruption of `llmgan generate`


class _StopAfter:
    """Wraps a model: the n-th call of generate raises KeyboardInterrupt (Ctrl-C in the middle of a batch)."""

    def __init__(self, model, n: int):
        self.model, self.n, self.calls = model, n, 0

    def parameters(self):
        return self.model.parameters()

    def generate(self, **kw):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.model.generate(**kw)


def _prompts(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "You are a social media user."},
             {"role": "user", "content": f"post number {i} " + "word " * (i % 5)}] for i in range(n)]


def test_interrupted_generation_keeps_the_finished_rows_before_the_first_unfinished_one(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmgan.generator import GenerationInterrupted, generate_responses

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = _prompts(10)
    full = generate_responses(model, tok, prompts, batch_size=2, max_new_tokens=4, seed=3, progress=False)
    # one window (at least 64 rows), sorted by length: the finished rows that come before the first
    # unfinished one in input order are kept, and they are the rows an uninterrupted run writes
    with pytest.raises(GenerationInterrupted) as stop:
        generate_responses(_StopAfter(model, 3), tok, prompts, batch_size=2, max_new_tokens=4, seed=3, progress=False)
    kept = stop.value.finished
    assert stop.value.total == 10 and len(kept) < 10 and kept == full[:len(kept)]
    # 70 rows: the first window of 64 is finished when the 33rd batch of 2 is interrupted
    prompts = _prompts(70)
    with pytest.raises(GenerationInterrupted) as stop:
        generate_responses(_StopAfter(model, 33), tok, prompts, batch_size=2, max_new_tokens=4, seed=3, progress=False)
    assert 64 <= len(stop.value.finished) < 70 and stop.value.total == 70
    again = generate_responses(model, tok, prompts, batch_size=2, max_new_tokens=4, seed=3, progress=False)
    assert stop.value.finished == again[:len(stop.value.finished)]
    assert full == generate_responses(model, tok, _prompts(10), batch_size=2, max_new_tokens=4, seed=3, progress=False)


def test_generate_cli_keeps_finished_rows_on_ctrl_c(tmp_path, demo_data, monkeypatch, capsys):
    import llmgan.generator as generator
    from llmgan.cli import main

    def interrupted(model, tok, prompts, **kw):
        raise generator.GenerationInterrupted([f"reply {i}" for i in range(3)], len(prompts))

    monkeypatch.setattr(generator, "generate_responses", interrupted)
    monkeypatch.setattr("llmgan.models.load_model", lambda *a, **k: _Dummy())
    monkeypatch.setattr("llmgan.models.load_tokenizer", lambda *a, **k: None)
    out = tmp_path / "g.jsonl"
    assert main(["generate", str(demo_data), "--split", "train", "--offset", "2", "-o", str(out)]) == 130
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["generated"] for r in rows] == ["reply 0", "reply 1", "reply 2"]
    assert all(r["real"] and r["prompt"] for r in rows)
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: kept the 3 finished rows") and "--offset 5" in err and "g.rest.jsonl" in err


class _Dummy:
    def to(self, device):
        return self


def test_sigterm_during_generate_exits_143_with_the_interruption_message(tmp_path, demo_data, tiny_model_dir):
    """SIGTERM gets the same clean stop as Ctrl-C; without a terminal, progress comes as plain lines."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgan", "generate", str(demo_data), "--split", "train", "--model", str(tiny_model_dir),
         "--batch-size", "1", "--max-new-tokens", "24", "-o", str(tmp_path / "g.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = []
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("generating: "):
                proc.send_signal(signal.SIGTERM)
                break
        assert any(s.startswith("generating: ") for s in seen), "".join(seen)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("terminated: ") and "--offset" in last, err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# Small things


def test_incomplete_characters_are_trimmed(default_model_dir):
    from transformers import AutoTokenizer

    from llmgan.generator import trim_incomplete_characters

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    ids = tok("שלום עולם", add_special_tokens=False)["input_ids"]
    cuts = [tok.decode(ids[:n]) for n in range(1, len(ids))]
    broken = [c for c in cuts if c.endswith("\ufffd")]  # generation stopped inside a character's bytes
    assert broken, cuts
    for c in broken:
        trimmed = trim_incomplete_characters(c)
        assert "\ufffd" not in trimmed and "שלום עולם".startswith(trimmed), (c, trimmed)
    assert trim_incomplete_characters("ok \ufffd in the middle") == "ok \ufffd in the middle"


def test_top_level_help_lists_each_command_once():
    res = llmgan("--help")
    assert res.returncode == 0
    listed = [line.split()[0] for line in res.stdout.splitlines() if line.startswith("    ") and line.split()]
    assert len(listed) == len(set(listed)) and "prepare" in listed and "evaluate" in listed, res.stdout
    assert "own module" not in res.stdout and "add_arguments" not in res.stdout


def test_plot_output_without_suffix_gets_png_and_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "generator/reward_mean": s / 10,
                                                           "discriminator/accuracy": 0.5, "generator/kl": 0.0,
                                                           "generator/completion_length": 9}) + "\n"
                                               for s in range(1, 6)))
    res = llmgan("plot", run, "-o", tmp_path / "out" / "plotfile")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {tmp_path / 'out' / 'plotfile.png'}"
    assert (tmp_path / "out" / "plotfile.png").read_bytes()[:4] == b"\x89PNG"
    line = one_error_line(llmgan("plot", run, "-o", tmp_path / "p.jpg"))
    assert ".png or .pdf or .svg" in line


def test_a_data_task_is_one_registry_entry(tmp_path, monkeypatch):
    from llmgan import data

    monkeypatch.setitem(data.TASKS, "toy", data.Task("toy", "post", "reply", "Answer like a person."))
    card = data.prepare(data.PrepareOptions(inputs=[str(DEMO_FILE)], output=str(tmp_path / "ds"), task="toy"))
    assert card["task"] == "toy"
    ds = data.load_prepared(tmp_path / "ds")
    assert ds["train"][0]["prompt"][0] == {"role": "system", "content": "Answer like a person."}
    from llmgan.cli import build_parser

    args = build_parser().parse_args(["prepare", "--task", "toy", str(DEMO_FILE), "-o", str(tmp_path / "x")])
    assert args.task == "toy"
