"""The `llmgan` command line: help texts, one-line user errors (exit 2, nothing left behind), end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import DEMO_FILE, REPO
from llmgan.cli import COMMANDS, main
from llmgan.data import CARD_NAME, PrepareOptions, prepare


def llmgan(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "llmgan", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------------------------------
# Help


def test_top_level_help_in_a_subprocess():
    res = llmgan("--help")
    assert res.returncode == 0, res.stderr
    assert "prepare" in res.stdout and "generate" in res.stdout and res.stderr == ""


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: llmgan" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("llmgan ")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: llmgan {command}") and len(out) > 300  # the module docstring is shown


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, exactly one line `error: ...` on stderr, no traceback, nothing left behind


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def make_inputs(case: str, d: Path) -> list[str]:
    """Write the input files of a bad-input case into d; returns the prepare arguments."""
    if case == "missing file":
        return ["--task", "reply", d / "nope.jsonl"]
    if case == "unknown suffix":
        (d / "data.xlsx").write_text("post,reply\n")
        return ["--task", "reply", d / "data.xlsx"]
    if case == "garbage parquet":
        (d / "data.parquet").write_bytes(b"PAR1 but not really \x00\x01\x02\x03" * 10)
        return ["--task", "reply", d / "data.parquet"]
    if case == "invalid jsonl":
        (d / "data.jsonl").write_text('{"post": "a", "reply": "b"}\n{"post": broken\n')
        return ["--task", "reply", d / "data.jsonl"]
    if case == "missing column":
        pd.DataFrame({"post": ["a"], "text": ["b"]}).to_csv(d / "data.csv", index=False)
        return ["--task", "reply", d / "data.csv"]
    if case == "no usable rows":
        (d / "data.jsonl").write_text(_jsonl([{"post": f"p{i}", "reply": " " if i % 2 else ""} for i in range(4)]))
        return ["--task", "reply", d / "data.jsonl"]
    if case == "numbers in jsonl":
        (d / "data.jsonl").write_text(_jsonl([{"post": "p", "reply": "ok"}, {"post": "q", "reply": 42}]))
        return ["--task", "reply", d / "data.jsonl"]
    if case == "int column in parquet":
        pd.DataFrame({"post": ["a", "b"], "reply": [1, 2]}).to_parquet(d / "data.parquet")
        return ["--task", "reply", d / "data.parquet"]
    if case == "missing test file":
        (d / "data.jsonl").write_text(_jsonl([{"post": "p", "reply": "r"}]))
        return ["--task", "reply", d / "data.jsonl", "--test-file", d / "test.parquet"]
    if case == "missing template placeholder column":
        (d / "data.jsonl").write_text(_jsonl([{"post": "p", "reply": "r"}]))
        (d / "tpl.txt").write_text("{author}: {post}")
        return ["--task", "reply", d / "data.jsonl", "--template", d / "tpl.txt"]
    if case == "fractions above 1":
        (d / "data.jsonl").write_text(_jsonl([{"post": "p", "reply": "r"}]))
        return ["--task", "reply", d / "data.jsonl", "--validation-fraction", "0.6", "--test-fraction", "0.6"]
    raise AssertionError(case)


EXPECTED = {
    "missing file": "input file not found",
    "unknown suffix": "unknown format",
    "garbage parquet": "could not read",
    "invalid jsonl": "could not read",
    "missing column": "missing column(s) reply; found columns: post, text",
    "no usable rows": "no usable rows left after cleaning (empty response: 4)",
    "numbers in jsonl": "column 'reply' must hold text, but row 1 holds int",
    "int column in parquet": "column 'reply' must hold text",
    "missing test file": "input file not found",
    "missing template placeholder column": "missing column(s) author",
    "fractions above 1": "must not exceed 1",
}


def check_one_error_line(stderr: str, expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", list(EXPECTED))
def test_prepare_bad_input(case, tmp_path, capsys):
    args = make_inputs(case, tmp_path)
    before = tree(tmp_path)
    rc = main(["prepare", *map(str, args), "-o", str(tmp_path / "sub" / "out")])
    captured = capsys.readouterr()
    assert rc == 2
    check_one_error_line(captured.err, EXPECTED[case])
    assert tree(tmp_path) == before  # no output folder, no temp folder, no parent folder


@pytest.mark.parametrize("case", ["missing file", "garbage parquet", "missing column", "numbers in jsonl"])
def test_prepare_bad_input_in_a_subprocess(case, tmp_path):
    args = make_inputs(case, tmp_path)
    before = tree(tmp_path)
    res = llmgan("prepare", *args, "-o", tmp_path / "out", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    check_one_error_line(res.stderr, EXPECTED[case])
    assert tree(tmp_path) == before


@pytest.fixture(scope="module")
def demo_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    prepare(PrepareOptions(inputs=[str(DEMO_FILE)], output=str(out), task="reply", validation_fraction=0))
    return out


GENERATE_CASES = {
    "missing dataset folder": (lambda ds, d: [d / "nope", "-o", d / "o.jsonl"], "prepared dataset not found"),
    "not a prepared folder": (lambda ds, d: [d, "-o", d / "o.jsonl"], "is not a dataset written by `llmgan prepare`"),
    "unknown split": (lambda ds, d: [ds, "--split", "dev", "-o", d / "o.jsonl"],
                      "split 'dev' not in"),
    "empty split left out": (lambda ds, d: [ds, "--split", "validation", "-o", d / "o.jsonl"],
                             "splits: train, test"),
    "bad output suffix": (lambda ds, d: [ds, "-o", d / "o.parquet"], "must end in .jsonl or .csv"),
}


@pytest.mark.parametrize("case", list(GENERATE_CASES))
def test_generate_bad_input(case, demo_ds, tiny_model_dir, tmp_path, capsys):
    make, expected = GENERATE_CASES[case]
    before = tree(tmp_path)
    rc = main(["generate", *map(str, make(demo_ds, tmp_path)), "--model", str(tiny_model_dir), "--quiet"])
    assert rc == 2
    check_one_error_line(capsys.readouterr().err, expected)
    assert tree(tmp_path) == before


def test_generate_bad_input_in_a_subprocess(demo_ds, tmp_path):
    res = llmgan("generate", demo_ds, "--split", "dev", "-o", tmp_path / "o.jsonl")
    assert res.returncode == 2
    check_one_error_line(res.stderr, "split 'dev' not in")
    assert tree(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# End to end, as a user runs it


def test_prepare_then_generate_end_to_end(tmp_path, tiny_model_dir):
    ds = tmp_path / "demo-reply"
    res = llmgan("prepare", "--task", "reply", DEMO_FILE, "-o", ds)
    assert res.returncode == 0, res.stderr
    assert "rows kept" in res.stdout and "192" in res.stdout
    card = json.loads((ds / CARD_NAME).read_text())
    out = tmp_path / "out.jsonl"
    res = llmgan("generate", ds, "--model", tiny_model_dir, "--split", "test", "-o", out, "--max-new-tokens", "8",
                 cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == card["splits"]["test"]["rows"] > 0
    assert all(set(r) == {"prompt", "system", "real", "generated", "cut_at_cap"} for r in rows)
    assert f"wrote {len(rows)} rows" in res.stdout and "cut at the cap of 8 new tokens" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-reply", "out.jsonl"]
