"""Reliability: interruption (SIGKILL, SIGINT), damaged checkpoints, full or read-only disks, NaN/Inf
faults, determinism, untrusted files and bad models/configs. The table in docs/reliability.md points
at these tests.

Training runs use the tiny random Llama (2 layers, hidden 64) and the demo data with the smallest
settings; two tests start real `llmgan train` subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmgan.config import load_config
from llmgan.errors import LlmganError

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "llmgan"
KEYS = ("discriminator/loss", "discriminator/accuracy", "discriminator/real_score", "discriminator/fake_score",
        "generator/reward_mean", "generator/kl", "generator/entropy", "generator/completion_length", "generator/loss")

# the tiny-model overrides (see tests/test_train.py::tiny_cfg), as CLI arguments
TINY = ["data.max_prompt_tokens=32", "generation.num_generations=2", "generation.max_new_tokens=6",
        "discriminator.hidden_layer=-1", "discriminator.width=32", "discriminator.heads=2", "discriminator.layers=1",
        "discriminator.warmup_steps=1", "discriminator.max_response_tokens=16", "train.prompts_per_step=2",
        "train.sample_every=1", "train.lr=1e-2"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The subprocesses below run with OMP_NUM_THREADS=1; in-process runs must use the same thread count,
    or float reductions differ and Adam turns the tiny differences of near-zero gradients into lr-sized
    steps (CI saw exactly that: metrics equal to 1e-4, LoRA weights not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overrides(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.name={model_dir}", f"data.path={data}", f"train.output_dir={out}", *TINY, *extra]


def tiny_cfg(model_dir: Path, data: Path, out: Path, *extra: str):
    return load_config(None, overrides(model_dir, data, out, *extra))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def same_metrics(a: list[dict], b: list[dict], exact: bool = False) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in KEYS:
            if exact:
                assert ra[key] == rb[key], (ra["step"], key)
            else:
                assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["step"], key)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmgan", "train", "--quiet", *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (rc {proc.returncode}) before the awaited state:\n{err[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the training subprocess")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# One uninterrupted reference run (5 steps, a checkpoint after each, the last 2 kept)

REF_STEPS = ["train.steps=5", "train.save_every=1", "train.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, demo_data) -> Path:
    from llmgan.training.train import train

    base = tmp_path_factory.mktemp("reference")
    cwd = base / "cwd"
    cwd.mkdir()
    old = os.getcwd()
    os.chdir(cwd)  # nothing may be written outside the run folder, not even in the working directory
    try:
        run = train(tiny_cfg(tiny_model_dir, demo_data, base / "run", *REF_STEPS), progress=False)
    finally:
        os.chdir(old)
    assert not list(cwd.iterdir()), f"files written outside the run folder: {list(cwd.iterdir())}"
    return run


def test_checkpoints_are_complete_rotated_and_staging_is_gone(reference):
    from llmgan.training.runs import STAGING_DIR, check_checkpoint, checkpoints

    assert [p.name for p in checkpoints(reference)] == ["checkpoint-4", "checkpoint-5"]
    assert sorted(p.name for p in reference.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    assert not (reference / STAGING_DIR).exists()
    for c in checkpoints(reference):
        check_checkpoint(c)
        for name in ("COMPLETE", "llmgan_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                     "trainer_state.json", "adapter_model.safetensors", "discriminator/discriminator.safetensors",
                     "discriminator/discriminator_optimizer.safetensors", "discriminator/discriminator_state.json"):
            assert (c / name).is_file(), (c.name, name)
    rows = read_jsonl(reference / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["faults/skipped_steps"] == 0 for r in rows)


def test_same_seed_same_first_five_steps(reference, tiny_model_dir, demo_data, tmp_path):
    """Determinism: the same seed and config on CPU give identical metrics for the first 5 steps."""
    from llmgan.training.train import train

    again = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "again", *REF_STEPS), progress=False)
    same_metrics(read_jsonl(reference / "metrics.jsonl"), read_jsonl(again / "metrics.jsonl"), exact=True)
    a = load_file(reference / "final" / "generator" / "adapter_model.safetensors")
    b = load_file(again / "final" / "generator" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_the_uninterrupted_run(reference, tiny_model_dir, demo_data, tmp_path):
    """A real `llmgan train` subprocess is SIGKILLed after checkpoint-2 is complete; `--resume` continues it
    and the run's metrics (all 5 steps) match the uninterrupted run's."""
    run = tmp_path / "killed"
    proc = subprocess.Popen(cli(*overrides(tiny_model_dir, demo_data, run, *REF_STEPS)), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run / "checkpoint-2" / "COMPLETE").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "final").exists()
    res = subprocess.run(cli("--resume", str(run)), env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stdout
    same_metrics(read_jsonl(reference / "metrics.jsonl"), read_jsonl(run / "metrics.jsonl"))
    samples = sorted(p.name for p in (run / "samples").glob("step_*.jsonl"))
    assert samples == [f"step_{i:05d}.jsonl" for i in range(1, 6)]
    a = load_file(reference / "final" / "generator" / "adapter_model.safetensors")
    b = load_file(run / "final" / "generator" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a), f"largest weight difference {worst:.3g}"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]


def test_sigint_writes_a_checkpoint_and_exits_cleanly(tiny_model_dir, demo_data, tmp_path):
    """Ctrl-C: the current step finishes, a checkpoint is written, exit code 130 without a traceback; the
    run then resumes from that checkpoint."""
    from llmgan.training.runs import check_checkpoint, checkpoints
    from llmgan.training.train import train

    run = tmp_path / "ctrl-c"
    args = overrides(tiny_model_dir, demo_data, run, "train.steps=200", "train.save_every=1000")
    proc = subprocess.Popen(cli(*args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "SIGINT received" in err and f"--resume {run}" in err
    steps = [r["step"] for r in read_jsonl(metrics)]
    done = checkpoints(run)
    assert [p.name for p in done] == [f"checkpoint-{steps[-1]}"]  # save_every=1000: only the Ctrl-C one
    check_checkpoint(done[0])
    assert not (run / "final").exists()
    # it resumes from there (in-process: cheaper than a third subprocess)
    cfg = tiny_cfg(tiny_model_dir, demo_data, run, f"train.steps={steps[-1] + 1}", "train.save_every=1000")
    train(cfg, resume=True, progress=False)
    assert [r["step"] for r in read_jsonl(metrics)] == list(range(1, steps[-1] + 2))
    assert (run / "final" / "generator").is_dir()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_handler_asks_for_a_checkpoint_then_a_second_signal_stops_at_once(signum):
    """The handler behind the Ctrl-C test, for SIGTERM too (what schedulers send before SIGKILL): the first
    signal sets the flag the trainer callback turns into save + stop; a second one raises KeyboardInterrupt;
    the previous handlers are restored."""
    from transformers import TrainerControl, TrainerState

    from llmgan.training.trainer import StopOnSignal, StopRequest

    previous = signal.getsignal(signum)
    request = StopRequest()
    callback = StopOnSignal(request)
    control = TrainerControl()
    request.install()
    try:
        callback.on_step_end(None, TrainerState(), control)
        assert not control.should_save and not control.should_training_stop
        os.kill(os.getpid(), signum)
        time.sleep(0.05)
        assert request.signum == signum
        callback.on_step_end(None, TrainerState(), control)
        assert control.should_save and control.should_training_stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
    finally:
        request.restore()
    assert signal.getsignal(signum) is previous


def test_resume_drops_rows_written_after_the_checkpoint_and_incomplete_saves(reference, tmp_path):
    """What a SIGKILL leaves: metrics rows past the newest complete checkpoint, a half-written line, a
    staging folder, an old-style checkpoint folder without COMPLETE. Resuming cleans all of it."""
    from llmgan.training.runs import STAGING_DIR, resume_point

    run = tmp_path / "run"
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns("checkpoint-5", "final"))
    (run / STAGING_DIR / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoint-6").mkdir()  # no COMPLETE marker
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "generator/kl": 0.1')  # cut mid-line
    ckpt = resume_point(run, None)
    assert ckpt.name == "checkpoint-4"
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert not (run / STAGING_DIR).exists() and not (run / "checkpoint-6").exists()
    assert sorted(p.name for p in (run / "samples").glob("*.jsonl")) == [f"step_{i:05d}.jsonl" for i in range(1, 5)]


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints


@pytest.mark.parametrize("victim", ["optimizer.pt", "adapter_model.safetensors", "trainer_state.json",
                                    "discriminator/discriminator_optimizer.safetensors", "rng_state.pth"])
def test_truncated_checkpoint_file_is_named_and_the_previous_one_offered(reference, tmp_path, victim):
    from llmgan.training.runs import resume_checkpoint

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    f = run / "checkpoint-5" / victim
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(LlmganError) as info:
        resume_checkpoint(run)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"checkpoint checkpoint-5 cannot be loaded: {victim} is damaged" in msg
    assert f"--resume {run} --checkpoint checkpoint-4" in msg
    assert resume_checkpoint(run, "checkpoint-4").name == "checkpoint-4"


def test_damaged_checkpoint_through_the_cli_then_resume_from_the_previous(reference, tiny_model_dir, demo_data,
                                                                          tmp_path, capsys):
    from llmgan.cli import main
    from llmgan.training.runs import check_checkpoint

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    f = run / "checkpoint-5" / "optimizer.pt"
    f.write_bytes(f.read_bytes()[:100])
    assert main(["train", "--quiet", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.pt is damaged" in err and "--checkpoint checkpoint-4" in err
    # the offered checkpoint works, replaces the damaged one, and step 5 is the uninterrupted run's step 5
    assert main(["train", "--quiet", "--resume", str(run), "--checkpoint", "checkpoint-4"]) == 0
    check_checkpoint(run / "checkpoint-5")
    same_metrics(read_jsonl(reference / "metrics.jsonl"), read_jsonl(run / "metrics.jsonl"))
    # a name is a name, not a path
    assert main(["train", "--quiet", "--resume", str(run), "--checkpoint", "../checkpoint-4"]) == 2
    assert "not a path" in capsys.readouterr().err
    assert main(["train", "--quiet", "--resume", str(run), "--checkpoint", "checkpoint-9"]) == 2
    assert "checkpoint-9 is not a complete checkpoint" in capsys.readouterr().err


def test_unsafe_pickle_in_a_checkpoint_is_refused(reference, tmp_path, capsys):
    """A checkpoint's .pt file holding a pickled callable is not executed: torch.load(weights_only=True)
    refuses it and the CLI reports it in one line."""
    from llmgan.cli import main

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state": Evil()}, run / "checkpoint-5" / "optimizer.pt")
    # one step more than the reference's 5, so that the optimizer state is loaded (a run resumed from the
    # checkpoint of its last step reads only its weights)
    assert main(["train", "--quiet", "--resume", str(run), "train.steps=6"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1
    assert "checkpoint checkpoint-5 holds a file that torch.load(weights_only=True) refuses" in errors[0]
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Full disk, read-only folder


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tiny_model_dir, demo_data, tmp_path,
                                                                     monkeypatch):
    from llmgan.adversarial.reward import DiscriminatorReward
    from llmgan.training.runs import STAGING_DIR, check_checkpoint, checkpoints
    from llmgan.training.train import train

    real_save = DiscriminatorReward.save
    calls = []

    def save(self, directory):
        calls.append(directory)
        if len(calls) == 2:  # the second checkpoint: the disk is full half-way through
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, directory)

    monkeypatch.setattr(DiscriminatorReward, "save", save)
    run = tmp_path / "run"
    with pytest.raises(LlmganError) as info:
        train(tiny_cfg(tiny_model_dir, demo_data, run, "train.steps=3", "train.save_every=1"), progress=False)
    msg = str(info.value)
    assert "could not write checkpoint checkpoint-2" in msg and "No space left on device" in msg
    assert "free some space" in msg and "the previous checkpoint checkpoint-1 is intact" in msg
    assert [p.name for p in checkpoints(run)] == ["checkpoint-1"]
    assert not (run / "checkpoint-2").exists() and not (run / STAGING_DIR).exists()
    check_checkpoint(run / "checkpoint-1")


def test_read_only_run_folder_is_one_clear_line(tiny_model_dir, demo_data, tmp_path, monkeypatch, capsys):
    """Root ignores chmod, so the read-only file system is simulated: every write into the run folder fails
    with EROFS. The CLI prints one line and exits 2; nothing is loaded."""
    from llmgan import models
    from llmgan.cli import main
    from llmgan.training import runs

    def refuse(path, text):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(runs, "write_atomic", refuse)
    monkeypatch.setattr(models, "build_policy", lambda cfg: pytest.fail("a model was loaded"))
    rc = main(["train", "--quiet", *overrides(tiny_model_dir, demo_data, tmp_path / "ro")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "cannot write to run folder" in err and "Read-only file system" in err and "not writable" in err


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or shutil.which("mount") is None:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return res.returncode == 0


def test_real_full_disk_on_a_small_tmpfs(reference, tiny_model_dir, demo_data, tmp_path):
    """The same on a real full file system (a tmpfs with room for about two checkpoints), where torch.save,
    safetensors and tokenizers fail with their own error types. Skipped where tmpfs cannot be mounted (needs
    root)."""
    from llmgan.training.runs import STAGING_DIR, check_checkpoint, checkpoints
    from llmgan.training.train import train

    one = sum(f.stat().st_size for f in (reference / "checkpoint-5").rglob("*") if f.is_file())
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, f"{int(2.5 * one) // 1024}k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run = disk / "run"
        with pytest.raises(LlmganError) as info:
            train(tiny_cfg(tiny_model_dir, demo_data, run, "train.steps=6", "train.save_every=1",
                           "train.keep_checkpoints=6"), progress=False)
        msg = str(info.value)
        assert "\n" not in msg and ("could not write checkpoint" in msg or "cannot write" in msg), msg
        done = checkpoints(run)
        assert done, msg
        for c in done:
            check_checkpoint(c)
        assert not (run / STAGING_DIR).exists()
        assert f"checkpoint {done[-1].name} is intact" in msg
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(demo_data, tmp_path, capsys):
    """train.output_dir pointing at a data folder (or '.') with --overwrite is refused; nothing is deleted."""
    from llmgan.cli import main

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    before = sorted(p.name for p in data.iterdir())
    assert main(["train", "--quiet", "--overwrite", f"train.output_dir={data}", f"data.path={data}"]) == 2
    err = capsys.readouterr().err
    assert "refusing to --overwrite" in err and "not an llmgan run folder" in err
    assert sorted(p.name for p in data.iterdir()) == before
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--quiet", f"train.output_dir={tmp_path / 'afile'}"]) == 2
    assert "is a file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# NaN / Inf


def test_nan_reward_nan_loss_inf_discriminator_loss_are_skipped_and_logged(tiny_model_dir, demo_data, tmp_path,
                                                                           monkeypatch):
    """Step 1: the reward is NaN; step 2: the generator's loss (and so its gradient) is NaN; step 3: the
    discriminator's loss is Inf. Each step is skipped (no weight moves) and logged with its cause; step 4
    trains normally."""
    import trl

    import llmgan.adversarial.losses as losses
    from llmgan.adversarial.reward import REWARD_SHAPES
    from llmgan.training.train import train

    calls = {"reward": 0, "loss": 0, "d": 0}
    real_shape, real_loss, real_bce = REWARD_SHAPES["log_sigmoid"], trl.GRPOTrainer._compute_loss, losses.bce_loss

    def reward(z):  # step 4's reward shape
        calls["reward"] += 1
        out = real_shape(z)
        return out * float("nan") if calls["reward"] == 1 else out

    def loss(self, model, inputs):
        calls["loss"] += 1
        out = real_loss(self, model, inputs)
        return out * float("nan") if calls["loss"] == 2 else out

    def bce(*a, **k):
        calls["d"] += 1
        out = real_bce(*a, **k)
        # warm-up takes 2 updates (k=2), each generator step 2 more: updates 7-8 belong to step 3
        return out + float("inf") if calls["d"] in (7, 8) else out

    monkeypatch.setitem(REWARD_SHAPES, "log_sigmoid", reward)
    monkeypatch.setattr(trl.GRPOTrainer, "_compute_loss", loss)
    monkeypatch.setattr(losses, "bce_loss", bce)
    run = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "run", "train.steps=4", "train.save_every=1",
                         "train.keep_checkpoints=4"), progress=False)
    faults = read_jsonl(run / "faults.jsonl")
    assert [f["step"] for f in faults] == [1, 2, 3]
    assert "reward is NaN/Inf for 4 of 4 completions (discriminator)" in faults[0]["causes"]
    assert "generator loss is nan" in faults[1]["causes"] and "generator gradient norm is nan" in faults[1]["causes"]
    assert any("discriminator loss" in c and "update skipped" in c for c in faults[2]["causes"])
    assert [f["consecutive"] for f in faults] == [1, 2, 3]
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["faults/skipped_steps"] for r in rows] == [1, 2, 3, 3]
    assert rows[2]["discriminator/skipped_updates"] == 2 and rows[3]["discriminator/skipped_updates"] == 0
    # LoRA B starts at zero: it is still exactly zero after 3 skipped steps, and moves at step 4
    lora_b = lambda c: [v for k, v in load_file(run / c / "adapter_model.safetensors").items() if "lora_B" in k]
    assert all(v.abs().sum() == 0 for v in lora_b("checkpoint-3"))
    assert any(v.abs().sum() > 0 for v in lora_b("checkpoint-4"))
    # D did not move in step 3 (its 2 updates were skipped)
    d_updates = lambda c: json.loads((run / c / "discriminator" / "discriminator_state.json").read_text())["updates"]
    assert [d_updates(f"checkpoint-{i}") for i in (1, 2, 3, 4)] == [4, 6, 6, 8]
    d2 = load_file(run / "checkpoint-2" / "discriminator" / "discriminator.safetensors")
    d3 = load_file(run / "checkpoint-3" / "discriminator" / "discriminator.safetensors")
    assert all(torch.equal(d2[k], d3[k]) for k in d2)
    assert all(torch.isfinite(v).all() for v in d3.values())


def test_consecutive_faults_stop_the_run_with_a_clear_message(tiny_model_dir, demo_data, tmp_path, monkeypatch,
                                                              capsys):
    from llmgan.cli import main
    from llmgan.adversarial.reward import REWARD_SHAPES

    real_shape = REWARD_SHAPES["log_sigmoid"]
    monkeypatch.setitem(REWARD_SHAPES, "log_sigmoid", lambda z: real_shape(z) + float("inf"))
    run = tmp_path / "run"
    rc = main(["train", "--quiet", *overrides(tiny_model_dir, demo_data, run, "train.steps=10", "train.save_every=1",
                                              "train.max_consecutive_faults=2")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "stopped at step 2: 2 consecutive steps had NaN/Inf values" in line[0]
    assert "train.max_consecutive_faults=2" in line[0] and "reward is NaN/Inf" in line[0]
    assert "step 1 skipped (weights not updated)" in err
    assert [r["step"] for r in read_jsonl(run / "faults.jsonl")] == [1, 2]
    assert not (run / "final").exists()


def test_embedding_objective_skips_faulty_steps(tiny_model_dir, demo_data, tmp_path, monkeypatch):
    import llmgan.adversarial.losses as losses
    from llmgan.training.train import train

    real_bce = losses.bce_loss
    monkeypatch.setattr(losses, "bce_loss", lambda *a, **k: real_bce(*a, **k) * float("nan"))
    with pytest.raises(LlmganError, match="stopped at step 2: 2 consecutive steps"):
        train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "emb", "train.steps=4", "train.objective=embedding",
                       "train.max_consecutive_faults=2"), progress=False)
    rows = read_jsonl(tmp_path / "emb" / "metrics.jsonl")
    assert [r["faults/skipped_steps"] for r in rows] == [1, 2]


def test_discriminator_reward_with_nan_features_is_finite_and_reports_it():
    """NaN hidden states (a broken encoder): D's update is skipped, its weights stay finite, the rewards are
    finite (NaN scores become 0 before shaping) and the cause is reported."""
    from llmgan.config import DiscriminatorSettings, RewardSettings
    from llmgan.adversarial.reward import DiscriminatorReward

    class NanEncoder:
        hidden_size, condition_on_prompt, device = 8, False, torch.device("cpu")

        def encode(self, prompts, texts, requires_grad=False, cut=None):
            return torch.full((len(texts), 3, 8), float("nan")), torch.ones(len(texts), 3, dtype=torch.bool)

    rw = DiscriminatorReward(DiscriminatorSettings(width=8, heads=2, layers=1), RewardSettings(), NanEncoder())
    before = {k: v.clone() for k, v in rw.model.state_dict().items()}
    out = rw(prompts=["p", "p"], completions=["a", "b"], response=["r", "r"])
    assert all(x == x and abs(x) < 1e4 for x in out)
    assert any("update skipped" in f for f in rw.faults) and any("NaN/Inf for 2 of 2" in f for f in rw.faults)
    assert all(torch.equal(before[k], v) for k, v in rw.model.state_dict().items())
    assert rw.updates == 0


def test_discriminator_losses_and_rewards_are_stable_at_extreme_logits():
    from llmgan.adversarial.losses import bce_loss, bradley_terry_loss
    from llmgan.adversarial.reward import shape_reward

    big = torch.tensor([1e4, -1e4, 80.0, -80.0])
    for loss in (bce_loss(big, -big), bce_loss(-big, big), bradley_terry_loss(big, -big), bradley_terry_loss(-big, big)):
        assert torch.isfinite(loss)
    for kind in ("log_sigmoid", "logit", "probability"):
        r = shape_reward(torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30]), kind)
        assert torch.isfinite(r).all()
    # the stable form, not log(sigmoid(x)): log(sigmoid(-200)) is -inf in float32, logsigmoid is -200
    assert shape_reward(torch.tensor([-200.0]), "log_sigmoid", clip=0).item() == pytest.approx(-200.0)


# ---------------------------------------------------------------------------------------------
# Untrusted files, configs and paths


def _calls(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (
                f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else
                f".{f.attr}" if isinstance(f, ast.Attribute) else "")
            yield name, node


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    """Over the package's source (AST, so docstrings do not count): torch.load always has weights_only=True;
    no pickle/joblib/marshal loads, no yaml.load (only safe_load), no eval/exec; trust_remote_code is never
    set to True; no log(sigmoid(x)) (the unstable form)."""
    import ast

    for path in sorted(SRC.glob("*.py")):
        tree = ast.parse(path.read_text())
        for name, node in _calls(tree):
            where = f"{path.name}:{node.lineno}"
            if name == "torch.load":
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, where
            assert name not in ("pickle.load", "pickle.loads", "joblib.load", "marshal.loads", "yaml.load",
                                "yaml.unsafe_load", "eval", "exec", "torch.jit.load"), where
            for k in node.keywords:
                if k.arg == "trust_remote_code":
                    assert not (isinstance(k.value, ast.Constant) and k.value.value is True), where
            if name in ("torch.log", ".log") and node.args and isinstance(node.args[0], ast.Call):
                inner = node.args[0].func
                assert getattr(inner, "attr", getattr(inner, "id", "")) != "sigmoid", where


def test_own_artefacts_are_safetensors_and_json_only(reference):
    """What llmgan itself writes (discriminator state, final models, fault counters) is safetensors/JSON;
    the .pt/.pth files in a checkpoint are transformers' (optimizer, scheduler, RNG), read back with
    torch.load(weights_only=True) by transformers."""
    ours = list((reference / "final").rglob("*")) + list(reference.glob("checkpoint-*/discriminator/*"))
    ours += list(reference.glob("checkpoint-*/llmgan_state.json"))
    suffixes = {p.suffix for p in ours if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".jinja", ".md"}, suffixes  # .jinja: chat template, .md: model card
    import transformers.trainer as hf

    text = Path(hf.__file__).read_text()
    assert all("weights_only=True" in m for m in re.findall(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text))


def test_trust_remote_code_is_off_unless_set(tmp_path):
    from llmgan.config import RunConfig
    from llmgan.models import load_model

    assert RunConfig().model.trust_remote_code is False
    d = tmp_path / "remote"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "custom",
                                               "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomModel"}}))
    (d / "modeling_custom.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n")
    with pytest.raises(LlmganError, match="ships its own Python code.*model.trust_remote_code=true"):
        load_model(str(d))
    assert not (tmp_path / "ran").exists()


def test_lr_scheduler_names_are_ones_transformers_knows():
    import typing

    from transformers.trainer_utils import SchedulerType

    from llmgan.config import TrainSettings

    allowed = typing.get_args(typing.get_type_hints(TrainSettings)["lr_scheduler"])
    assert set(allowed) <= {s.value for s in SchedulerType}


@pytest.mark.parametrize("override, words", [
    ("train.lr_scheduler=bogus", "must be one of 'constant'"),
    ("train.max_consecutive_faults=0", "train.max_consecutive_faults must be >= 1"),
    ("train.lr=.nan", "train.lr must be a finite number"),
    ("train.lr=-1", "train.lr must be in [0, inf]"),
    ("generation.temperature=.nan", "generation.temperature must be a finite number"),
    ("train.seed=-1", "train.seed must be in [0, 2**32)"),
    ("data.max_prompt_tokens=0", "data.max_prompt_tokens must be >= 1"),
    ("data.max_train_samples=0", "data.max_train_samples must be >= 1 or null"),
    ("discriminator.dropout=1.5", "discriminator.dropout must be in [0, 1)"),
    ("discriminator.width=0", "discriminator.width must be >= 1"),
    ("discriminator.heads=0", "discriminator.heads must be >= 1"),
    ("model.lora.r=0", "model.lora.r must be >= 1"),
    ("train.warmup_ratio=2", "train.warmup_ratio must be in [0, 1]"),
    ("discriminator.warmup_pool=-1", "discriminator.warmup_pool and warmup_batch must be >= 0"),
    ("discriminator.warmup_batch=8", "discriminator.warmup_batch needs discriminator.warmup_pool > 0"),
    ("discriminator.warmup_pool_temperatures=[0.8]", "warmup_pool_temperatures needs discriminator.warmup_pool > 0"),
    ("discriminator.warmup_pool_temperatures=[0.8,0]", "warmup_pool_temperatures must all be > 0"),
])
def test_impossible_config_values_are_rejected_before_any_model_loads(override, words):
    with pytest.raises(LlmganError) as info:
        load_config(None, [override])
    assert words in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Models, tokenizers, long prompts


def test_model_paths_that_are_not_models(tmp_path, tiny_model_dir):
    from llmgan.models import load_model

    cases = {}
    trunc = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    cases[trunc] = "could not load a causal LM"
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    cases[bad_json] = "could not load a causal LM"
    pickled = tmp_path / "pickle-only"
    pickled.mkdir()
    shutil.copy(tiny_model_dir / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    cases[pickled] = "safetensors weights only"
    (tmp_path / "weights.bin").write_bytes(b"x")
    cases[tmp_path / "weights.bin"] = "not a model folder"
    cases[tmp_path / "empty-dir"] = "not a model folder"
    (tmp_path / "empty-dir").mkdir()
    cases[tmp_path / "missing"] = "does not exist"
    for path, words in cases.items():
        with pytest.raises(LlmganError) as info:
            load_model(str(path))
        assert words in str(info.value) and "\n" not in str(info.value), (path, str(info.value))


def test_tokenizer_without_chat_template_falls_back_with_a_warning(tiny_model_dir, tmp_path):
    from llmgan.generator import generate_responses
    from llmgan.models import FALLBACK_CHAT_TEMPLATE, apply_chat, load_model, load_tokenizer

    d = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.warns(UserWarning, match="has no chat template"):
        tok = load_tokenizer(str(d))
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    msgs = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "a post"}]]
    assert apply_chat(tok, msgs) == ["system: be brief\n\nuser: a post\n\nassistant: "]
    out = generate_responses(load_model(str(d)), tok, msgs, max_new_tokens=3, progress=False)
    assert len(out) == 1 and isinstance(out[0], str)


def test_training_prompts_are_cut_to_max_prompt_tokens(tiny_model_dir, demo_data):
    from llmgan.models import load_tokenizer
    from llmgan.training.dataset import load_train_dataset, truncate_prompt

    tok = load_tokenizer(str(tiny_model_dir))
    long = [{"role": "system", "content": "sys"}, {"role": "user", "content": "word " * 500}]
    cut = truncate_prompt(long, tok, 10)
    assert cut[0] == long[0] and len(tok(cut[1]["content"], add_special_tokens=False)["input_ids"]) <= 10
    assert long[1]["content"].startswith(cut[1]["content"].strip())  # the beginning is kept
    cfg = load_config(None, [f"data.path={demo_data}", "data.max_prompt_tokens=8"])
    rows, _ = load_train_dataset(cfg, tok)
    users = [m[-1]["content"] for m in rows["prompt"]]
    assert max(len(tok(u, add_special_tokens=False)["input_ids"]) for u in users) <= 8


def test_prompt_plus_generation_longer_than_the_context_is_a_clear_error(tiny_model_dir, demo_data, tmp_path):
    from llmgan.training.train import train

    small = tmp_path / "small-context"
    shutil.copytree(tiny_model_dir, small)
    cfg = json.loads((small / "config.json").read_text())
    cfg["max_position_embeddings"] = 48
    (small / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LlmganError) as info:
        train(tiny_cfg(small, demo_data, tmp_path / "run", "generation.max_new_tokens=16"), progress=False)
    msg = str(info.value)
    assert "more than the model's context of 48" in msg and "lower data.max_prompt_tokens" in msg
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cpu_id_tells_alike_named_cpus_apart_on_x86_and_arm():
    # the first processor's block only; a machine whose cpuinfo has neither field set gets None, never "?/?/?/?"
    from llmgan.machine import cpu_id, cpu_model, parse_cpuinfo

    x86 = parse_cpuinfo("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
                        "model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 2\n\nprocessor\t: 1\nmodel\t\t: 99\n")
    assert cpu_id(x86) == "GenuineIntel/6/207/2" and cpu_model(x86) == "Intel(R) Xeon(R) Processor"
    arm = parse_cpuinfo("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
                        "CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd0c\nCPU revision\t: 1\n")
    assert cpu_id(arm) == "0x41/8/0x1/0xd0c/1" and cpu_model(arm) not in ("", "unknown")
    assert cpu_id(parse_cpuinfo("processor\t: 0\nvendor_id\t: GenuineIntel\n")) is None and cpu_id({}) is None
