"""What a new user hit with `llmgan train` / `sft` (issue 16, items 1, 4 and 6): the dataset and the output
path are checked before any model loads; a run that fails before its first step leaves no folder that
blocks the retry; SFT metrics carry timestamps and `timing/step`; `--help-config`; and no library progress
bars or FutureWarnings when the user asked for quiet output."""

from __future__ import annotations

import json

import pytest

from llmgan.cli import main

TINY = ["data.max_prompt_tokens=32", "generation.num_generations=2", "generation.max_new_tokens=6",
        "discriminator.hidden_layer=-1", "discriminator.width=32", "discriminator.heads=2", "discriminator.layers=1",
        "discriminator.warmup_steps=1", "discriminator.max_response_tokens=16", "train.prompts_per_step=2",
        "train.lr=1e-2"]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: the checks must come first."""
    from llmgan import models

    def refuse(*a, **k):
        pytest.fail("a model was loaded before the check")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models, "load_tokenizer", refuse)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "sft"])
def test_missing_dataset_is_refused_before_any_model_loads_and_leaves_no_folder(command, tmp_path, capsys,
                                                                                no_model_loads):
    run = tmp_path / "run"
    args = [command, "--quiet", f"data.path={tmp_path / 'does' / 'not' / 'exist'}", f"train.output_dir={run}"]
    assert main(args) == 2
    assert "prepared dataset not found" in _error_line(capsys)
    assert not run.exists()
    assert main(args) == 2  # the retry says the same, not "run folder exists"
    assert "prepared dataset not found" in _error_line(capsys)


def test_dataset_without_the_split_or_columns_is_refused_before_any_model_loads(demo_data, tmp_path, capsys,
                                                                               no_model_loads):
    from datasets import load_from_disk

    base = [f"train.output_dir={tmp_path / 'run'}", "--quiet"]
    assert main(["train", f"data.path={demo_data}", "data.train_split=nope", *base]) == 2
    assert "split 'nope' not in" in _error_line(capsys)
    not_prepared = tmp_path / "plain"
    not_prepared.mkdir()
    assert main(["train", f"data.path={not_prepared}", *base]) == 2
    assert "is not a dataset written by `llmgan prepare`" in _error_line(capsys)
    ds = load_from_disk(str(demo_data))
    broken = tmp_path / "broken"
    ds.map(lambda r: r, remove_columns=["response"]).save_to_disk(str(broken))
    assert main(["train", f"data.path={broken}", *base]) == 2
    assert "has no column response" in _error_line(capsys)
    assert not (tmp_path / "run").exists()
    # a held-out AUROC needs a held-out split: training rows would measure memorisation
    assert main(["train", f"data.path={demo_data}", "data.eval_split=nope", "discriminator.heldout_size=10", *base]) == 2
    line = _error_line(capsys)
    assert "discriminator.heldout_size=10 needs the held-out split 'nope'" in line and "data.eval_split" in line
    assert not (tmp_path / "run").exists()


def test_sft_trains_no_d_so_it_needs_no_held_out_split(demo_data, tmp_path, capsys, monkeypatch):
    """A held-out split is train's need (D's held-out AUROC), not SFT's: `llmgan sft` on data without
    data.eval_split passes every data check and gets as far as loading the model."""
    from llmgan import models

    class Loading(Exception):
        pass

    def loading(*a, **k):
        raise Loading

    monkeypatch.setattr(models, "load_model", loading)
    monkeypatch.setattr(models, "load_tokenizer", loading)
    args = [f"data.path={demo_data}", "data.eval_split=nope", "discriminator.heldout_size=10", "--quiet"]
    with pytest.raises(Loading):
        main(["sft", f"train.output_dir={tmp_path / 'sft'}", *args])
    assert main(["train", f"train.output_dir={tmp_path / 'train'}", *args]) == 2
    assert "needs the held-out split 'nope'" in _error_line(capsys)


@pytest.mark.parametrize("command", ["train", "sft"])
def test_output_path_under_a_file_is_refused_before_any_model_loads(command, demo_data, tmp_path, capsys,
                                                                   no_model_loads):
    (tmp_path / "some_file").write_text("x")
    assert main([command, "--quiet", f"data.path={demo_data}", f"train.output_dir={tmp_path / 'some_file' / 'run'}"]) == 2
    assert "is a file, not a folder" in _error_line(capsys)


def test_a_run_that_fails_before_its_first_step_leaves_no_blocking_folder(tiny_model_dir, demo_data, tmp_path,
                                                                          capsys):
    """The model loads, then the context-length check fails: the run folder (config.yaml only) is removed,
    so the retry fails the same way, not with 'run folder exists'."""
    run = tmp_path / "run"
    args = ["train", "--quiet", f"model.name={tiny_model_dir}", f"data.path={demo_data}", f"train.output_dir={run}",
            *TINY, "generation.max_new_tokens=100000"]
    for _ in range(2):
        assert main(args) == 2
        assert "more than the model's context" in _error_line(capsys)
        assert not run.exists()


def test_help_config_lists_every_key_with_help_and_default(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help-config"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "discriminator.steps_per_generator_step = 2" in out and "k discriminator updates per generator update" in out
    assert "train.beta = 0.04" in out and "reward.kind = 'log_sigmoid'" in out and "model.lora.r = 16" in out


def test_quiet_sft_prints_no_library_noise_and_logs_time_per_step(tiny_model_dir, demo_data, tmp_path, capfd):
    """`--quiet`: no `Loading weights` / `Tokenizing` / `Map` bars, no FutureWarning, no per-step log dicts;
    sft/metrics.jsonl rows carry the Unix `time` and `timing/step`."""
    run = tmp_path / "sft"
    assert main(["sft", "--quiet", f"model.name={tiny_model_dir}", f"data.path={demo_data}", f"train.output_dir={run}",
                 *TINY, "train.sft_steps=2"]) == 0
    err = capfd.readouterr().err
    for noise in ("Loading weights", "Tokenizing", "Map", "FutureWarning", "'loss'"):
        assert noise not in err, err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["timing/step"] > 0 and r["time"] > 1.7e9 for r in rows)
    assert (run / "final" / "generator").is_dir()


def test_registered_toy_architecture_loss_and_reward_shape_run_an_adversarial_step(tiny_model_dir, demo_data,
                                                                                   tmp_path, monkeypatch):
    """One registry entry each, and config validation and one adversarial step (warm-up + 1 generator step on
    the tiny model) use them."""
    import torch
    from torch import nn

    from llmgan.adversarial import discriminators, losses, reward
    from llmgan.config import load_config
    from llmgan.training.train import train

    used = {"arch": 0, "loss": 0, "shape": 0}

    class MeanProbe(nn.Module):
        def __init__(self, input_size, settings):
            super().__init__()
            self.head = nn.Linear(input_size, 1)

        def forward(self, hidden, mask):
            used["arch"] += 1
            m = mask.to(hidden.dtype)[..., None]
            return self.head((hidden * m).sum(1) / m.sum(1).clamp(min=1)).squeeze(-1)

    def hinge(real, fake, settings):
        used["loss"] += 1
        return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()

    def tanh_shape(z):
        used["shape"] += 1
        return torch.tanh(z)

    monkeypatch.setitem(discriminators.ARCHITECTURES, "probe", MeanProbe)
    monkeypatch.setitem(losses.LOSSES, "hinge", losses.Loss(hinge))
    monkeypatch.setitem(reward.REWARD_SHAPES, "tanh", tanh_shape)
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.path={demo_data}", f"train.output_dir={tmp_path / 'run'}",
                             *TINY, "train.steps=1", "discriminator.architecture=probe", "discriminator.loss=hinge",
                             "reward.kind=tanh"])
    run = train(cfg, progress=False)
    assert used["arch"] > 0 and used["loss"] > 0 and used["shape"] == 1
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert -1 <= row["generator/reward_mean"] <= 1 and row["discriminator/loss"] >= 0
    with pytest.raises(Exception, match="discriminator.architecture must be one of"):
        load_config(None, ["discriminator.architecture=nope"])


def test_select_checks_its_output_folders_before_any_model_loads(tmp_path, capsys, no_model_loads):
    """`llmgan select RUN` when RUN/selection is a file: one error line, nothing generated or loaded."""
    from llmgan.config import load_config
    from llmgan.training.runs import prepare_run_dir

    run = prepare_run_dir(load_config(None, [f"train.output_dir={tmp_path / 'run'}"]), resume=False)
    (run / "selection").write_text("x")
    assert main(["select", str(run), "--quiet"]) == 2
    assert "selection output" in _error_line(capsys)


def test_converting_the_default_model_leaves_the_seeded_rng_alone(tmp_path, monkeypatch):
    """The first use of the embedded default converts it, which builds a model (random initial weights):
    that must not move the global RNG, or a run's LoRA initialisation would depend on whether the cache
    existed (seen in issue 12's bit-identical check: grad_norm differed at step 1)."""
    import torch

    from llmgan.models import ensure_default_model

    monkeypatch.setenv("LLMGAN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    folder = ensure_default_model(verbose=False)
    assert (folder / "llmgan_source.json").is_file()
    assert torch.equal(torch.rand(3), expected)
