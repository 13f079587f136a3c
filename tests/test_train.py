"""Adversarial training on a tiny random Llama: parameters move, runs resume exactly, the CLI works."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmgan.config import load_config

REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(model_dir: Path, data: Path, out: Path, *extra: str):
    return load_config(None, [
        f"model.name={model_dir}", f"data.path={data}", f"train.output_dir={out}",
        "data.max_prompt_tokens=32", "generation.num_generations=2", "generation.max_new_tokens=6",
        "discriminator.hidden_layer=-1", "discriminator.width=32", "discriminator.heads=2", "discriminator.layers=1",
        "discriminator.warmup_steps=1", "discriminator.max_response_tokens=16", "train.prompts_per_step=2",
        "train.sample_every=1", "train.lr=1e-2", *extra])


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_one_generator_step_changes_trainable_parameters(tiny_model_dir, demo_data, tmp_path):
    from llmgan.training.train import train

    run = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "run", "train.steps=1"), progress=False)
    adapter = load_file(run / "final" / "generator" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero; one step must move it"
    rows = read_metrics(run)
    assert len(rows) == 1
    for key in ("discriminator/loss", "discriminator/accuracy", "discriminator/real_score", "discriminator/fake_score",
                "generator/reward_mean", "generator/kl", "generator/entropy", "generator/completion_length",
                "timing/generate", "timing/encode", "timing/discriminator", "timing/reference", "timing/update"):
        assert key in rows[0], key
    assert (run / "plots" / "discriminator.png").is_file()
    assert (run / "final" / "discriminator" / "discriminator.safetensors").is_file()
    assert list((run / "samples").glob("step_*.jsonl"))
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").iterdir())


def test_resume_gives_the_same_next_step_metrics(tiny_model_dir, demo_data, tmp_path):
    """Run 4 steps with checkpoints at 2 and 4; restart from checkpoint-2: steps 3-4 must match."""
    from llmgan.training.runs import checkpoints
    from llmgan.training.train import train

    full = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "full", "train.steps=4", "train.save_every=2",
                          "train.keep_checkpoints=2"), progress=False)
    assert [p.name for p in checkpoints(full)] == ["checkpoint-2", "checkpoint-4"]
    expected = read_metrics(full)
    # a run that was stopped right after checkpoint-2
    cut = tmp_path / "cut"
    shutil.copytree(full, cut, ignore=shutil.ignore_patterns("checkpoint-4", "final", "tensorboard"))
    (cut / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in expected[:2]))
    cfg = tiny_cfg(tiny_model_dir, demo_data, cut, "train.steps=4", "train.save_every=2", "train.keep_checkpoints=2")
    train(cfg, resume=True, progress=False)
    resumed = read_metrics(cut)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(expected[2:], resumed[2:]):
        for key in ("discriminator/loss", "discriminator/accuracy", "generator/reward_mean", "generator/kl",
                    "generator/completion_length"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # killed after checkpoint-4, the last step, before final/: the resume trains no step 5, and final/ holds
    # checkpoint-4's generator and discriminator
    done = tmp_path / "done"
    shutil.copytree(full, done, ignore=shutil.ignore_patterns("final", "tensorboard"))
    train(tiny_cfg(tiny_model_dir, demo_data, done, "train.steps=4", "train.save_every=2", "train.keep_checkpoints=2"),
          resume=True, progress=False)
    assert [p.name for p in checkpoints(done)] == ["checkpoint-2", "checkpoint-4"]
    assert [r["step"] for r in read_metrics(done)] == [1, 2, 3, 4]
    for part, name in (("generator", "adapter_model.safetensors"), ("discriminator", "discriminator.safetensors")):
        a, b = load_file(full / "final" / part / name), load_file(done / "final" / part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_train_cli_end_to_end(tiny_model_dir, demo_data, tmp_path):
    """`llmgan train` in a subprocess with a tiny budget, then resume it to more steps."""
    run = tmp_path / "cli-run"
    base = [sys.executable, "-m", "llmgan", "train", "--quiet", f"model.name={tiny_model_dir}", f"data.path={demo_data}",
            f"train.output_dir={run}", "train.steps=2", "train.save_every=1", "generation.num_generations=2",
            "generation.max_new_tokens=4", "discriminator.hidden_layer=1", "discriminator.warmup_steps=0",
            "train.prompts_per_step=2", "data.max_prompt_tokens=32"]
    res = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "run folder" in res.stdout
    assert len(read_metrics(run)) == 2
    # the same folder again without --resume is refused with one line
    again = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    res = subprocess.run([sys.executable, "-m", "llmgan", "train", "--quiet", "--resume", str(run), "train.steps=3"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


def test_sft_baseline_moves_the_model(tiny_model_dir, demo_data, tmp_path):
    from llmgan.training.sft import sft

    cfg = tiny_cfg(tiny_model_dir, demo_data, tmp_path / "sft", "train.sft_steps=3")
    run = sft(cfg, progress=False)
    adapter = load_file(run / "final" / "generator" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    losses = [r["sft/loss"] for r in read_metrics(run) if "sft/loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_sft_and_adversarial_stage_recompute_activations_only_when_asked(tmp_path):
    """model.gradient_checkpointing decides for both stages; TRL's SFTConfig would otherwise turn it on
    and recompute every layer in backward (with llmgan's CPU loss an SFT step 44 % slower)."""
    from llmgan.config import load_config
    from llmgan.training.sft import sft_args
    from llmgan.training.trainer import grpo_args

    for value in (False, True):
        cfg = load_config(None, [f"model.gradient_checkpointing={str(value).lower()}", f"train.output_dir={tmp_path}"])
        assert sft_args(cfg, tmp_path, progress=False).gradient_checkpointing is value
        assert grpo_args(cfg, tmp_path).gradient_checkpointing is value
    assert load_config(None, []).model.gradient_checkpointing is False


def test_sft_stage_takes_its_own_lr_schedule_and_the_game_keeps_its_own(tmp_path):
    """train.sft_lr_scheduler sets the SFT stage's schedule alone (null: train.lr_scheduler for both)."""
    from llmgan.config import load_config
    from llmgan.errors import LlmganError
    from llmgan.training.sft import sft_args
    from llmgan.training.trainer import grpo_args

    cfg = load_config(None, ["train.sft_lr_scheduler=linear", f"train.output_dir={tmp_path}"])
    sft, game = sft_args(cfg, tmp_path, progress=False), grpo_args(cfg, tmp_path)
    assert sft.lr_scheduler_type.value == "linear" and game.lr_scheduler_type.value == "constant"
    cfg = load_config(None, ["train.lr_scheduler=cosine", f"train.output_dir={tmp_path}"])
    assert sft_args(cfg, tmp_path, progress=False).lr_scheduler_type.value == "cosine"
    with pytest.raises(LlmganError, match="train.sft_lr_scheduler"):
        load_config(None, ["train.sft_lr_scheduler=bogus"])


def test_sft_warm_start_then_adversarial(tiny_model_dir, demo_data, tmp_path):
    """train.sft_warm_start: SFT into RUN/sft first, then the adversarial steps from that model; a resumed
    run reuses the finished SFT model instead of training it again."""
    from llmgan.training.train import train

    cfg = tiny_cfg(tiny_model_dir, demo_data, tmp_path / "warm", "train.sft_warm_start=true", "train.sft_steps=2",
                   "train.sft_lr=5e-3", "train.steps=1", "train.save_every=1")
    run = train(cfg, progress=False)
    sft_adapter = run / "sft" / "final" / "generator" / "adapter_model.safetensors"
    assert sft_adapter.is_file() and [r["step"] for r in read_metrics(run / "sft") if "sft/loss" in r]
    assert any(v.abs().sum() > 0 for k, v in load_file(sft_adapter).items() if "lora_B" in k)
    assert [r["step"] for r in read_metrics(run)] == [1]
    stamp = sft_adapter.stat().st_mtime_ns
    again = train(tiny_cfg(tiny_model_dir, demo_data, run, "train.sft_warm_start=true", "train.sft_steps=2",
                           "train.steps=2", "train.save_every=1"), resume=True, progress=False)
    assert sft_adapter.stat().st_mtime_ns == stamp
    assert [r["step"] for r in read_metrics(again)] == [1, 2]


def test_embedding_objective_passes_gradient_into_the_generator(tiny_model_dir, demo_data, tmp_path):
    """The prototype's objective: D's loss through the policy's own encoding reaches the LoRA weights."""
    from peft import LoraConfig, get_peft_model

    from llmgan.adversarial.discriminators import Discriminator
    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.models import load_model, load_tokenizer
    from llmgan.training.train import train

    tok = load_tokenizer(str(tiny_model_dir))
    model = get_peft_model(load_model(str(tiny_model_dir)), LoraConfig(r=4, target_modules="all-linear",
                                                                       init_lora_weights=False))
    own = HiddenStateEncoder(model, tok, layer=-1, condition_on_prompt=True)
    prompts = [[{"role": "user", "content": "a post"}]] * 2
    hidden, mask = own.encode(prompts, ["a reply", "another reply"], requires_grad=True)
    logits = Discriminator(hidden.shape[-1], width=16, layers=1, heads=2)(hidden, mask)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # without requires_grad the encoding is detached (the reward path)
    assert not own.encode(prompts, ["a reply", "x"])[0].requires_grad

    run = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "emb", "train.steps=2", "train.objective=embedding"),
                progress=False)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["generator/loss"]) for r in rows)
    adapter = load_file(run / "final" / "generator" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)


def test_running_mean_hand_values():
    from llmgan.plots import running_mean, smoothing_window

    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert running_mean([1.0, float("nan"), 3.0], 3) == [1.0, 1.0, 2.0]
    assert smoothing_window(10) == 1 and smoothing_window(100) == 10 and smoothing_window(1000) == 25


def test_cli_plot_overlays_runs_and_names_bad_input(tmp_path, capsys):
    from llmgan.cli import main
    from PIL import Image

    for name, base in (("s0", 0.0), ("s1", 1.0)):
        (tmp_path / name).mkdir()
        rows = [{"step": i, "generator/reward_mean": base + 0.01 * i, "discriminator/accuracy": 0.6,
                 "generator/kl": 0.001 * i, "generator/completion_length": 20 + i % 3} for i in range(1, 41)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "fig" / "seeds.png"
    assert main(["plot", str(tmp_path / "s0"), str(tmp_path / "s1"), "-o", str(out)]) == 0
    assert Image.open(out).size[0] > 500 and "wrote" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "s0"), "-o", str(out), "--metrics", "generator/nope"]) == 2
    assert "no run has the metric 'generator/nope'" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "missing: no such file" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "s0"), str(tmp_path / "s1"), "-o", str(out), "--labels", "a"]) == 2
    assert "1 labels for 2 runs" in capsys.readouterr().err


def test_caps_taken_from_the_data(tiny_model_dir, demo_data, tmp_path):
    """data.response_cap_quantile: the generation and discriminator caps are a quantile of the training
    responses' token lengths, written to RUN/data_caps.json and used by the run."""
    import math

    import numpy as np
    from datasets import load_from_disk

    from llmgan.models import load_tokenizer
    from llmgan.training.dataset import apply_data_caps, data_caps

    tok = load_tokenizer(str(tiny_model_dir))
    cfg = tiny_cfg(tiny_model_dir, demo_data, tmp_path / "caps", "data.response_cap_quantile=0.5", "train.steps=1")
    responses = load_from_disk(str(demo_data / "train"))["response"]
    lengths = np.array([len(tok(r, add_special_tokens=False)["input_ids"]) for r in responses])
    cap = math.ceil(np.quantile(lengths, 0.5))
    caps = data_caps(cfg, tok)
    assert caps["cap_tokens"] == cap and caps["generation.max_new_tokens"] == cap + 1
    assert caps["human_longer_share"] == pytest.approx((lengths > cap).mean(), abs=1e-4)
    assert 0.3 < caps["human_longer_share"] < 0.5  # a median cap: about half of the replies are longer
    resolved = apply_data_caps(cfg, caps)
    assert (resolved.generation.max_new_tokens, resolved.discriminator.max_response_tokens) == (cap + 1, cap)
    assert data_caps(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "fixed"), tok) is None
    # the caps read the training split only, so `llmgan sft` on data without a held-out split gets them too
    no_heldout = tiny_cfg(tiny_model_dir, demo_data, tmp_path / "caps2", "data.response_cap_quantile=0.5",
                          "train.steps=1", "data.eval_split=nope", "discriminator.heldout_size=10")
    assert data_caps(no_heldout, tok) == caps
    # that `llmgan train` uses them: test_warmup_until_the_heldout_auroc_stops_rising_and_the_judge_beside_it
    with pytest.raises(Exception, match="response_cap_quantile must be in"):
        tiny_cfg(tiny_model_dir, demo_data, tmp_path / "bad", "data.response_cap_quantile=1.5")


def test_warmup_until_the_heldout_auroc_stops_rising_and_the_judge_beside_it(tiny_model_dir, demo_data, tmp_path):
    """discriminator.heldout_size: D's held-out AUROC before and during the warm-up and at every generator step;
    warmup_patience ends the warm-up early; the judge's strongest detector on the same texts at its end."""
    from llmgan.training.train import train

    cfg = tiny_cfg(tiny_model_dir, demo_data, tmp_path / "held", "train.steps=1", "discriminator.warmup_steps=8",
                   "discriminator.heldout_size=10", "discriminator.heldout_every=1", "discriminator.warmup_patience=1",
                   "discriminator.lr=1e-9",  # a D that cannot learn: its AUROC stays put, the warm-up ends at once
                   "data.response_cap_quantile=0.5")  # and the caps from the data (test_caps_taken_from_the_data)
    run = train(cfg, progress=False)
    caps = json.loads((run / "data_caps.json").read_text())
    row = read_metrics(run)[0]
    # the tiny random model almost never ends a reply: its completions run to the data's cap, not the fixed 6
    assert caps["generation.max_new_tokens"] > 6
    assert 6 < row["generator/completion_length"] <= caps["generation.max_new_tokens"] and "generator/clipped_ratio" in row
    rows = [json.loads(x) for x in (run / "warmup.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "discriminator/heldout_auroc" in rows[0]
    end = rows[-1]
    assert end["end_of_warmup"] and end["step"] == 1  # no rise after step 1 with patience 1
    assert 0 <= end["discriminator/heldout_auroc"] <= 1 and 0 <= end["judge/heldout_auroc_max"] <= 1
    assert end["judge/heldout_auroc_max_detector"] in ("minilm_lr", "ngram_lr")
    teacher = json.loads((run / "teacher" / "teacher.json").read_text())  # the warmed-up D, kept for --best-of
    assert teacher["discriminator/heldout_auroc"] == end["discriminator/heldout_auroc"] and teacher["warmup_steps"] == 1
    assert teacher["start_model"] == str(tiny_model_dir) and (run / "teacher" / "discriminator.safetensors").is_file()
    assert "discriminator/heldout_auroc" in read_metrics(run)[0]
    held = [json.loads(x) for x in (run / "heldout.jsonl").read_text().splitlines()]  # kept for a resume
    assert len(held) == 10 and {"prompt", "real", "fake"} <= set(held[0])
    assert (run / "plots" / "warmup" / "discriminator.png").is_file()
    with pytest.raises(Exception, match="warmup_patience needs"):
        tiny_cfg(tiny_model_dir, demo_data, tmp_path / "bad", "discriminator.warmup_patience=2")


def test_a_warmup_pool_is_sampled_once_and_passed_over_in_pairs(tmp_path, monkeypatch):
    """discriminator.warmup_pool: one start-model sample per pool prompt, generated and encoded once
    (RUN/warmup_pool.jsonl); warm-up steps take warmup_batch (prompt, sample, real) triples from it, each pass
    over the pool in a new order; a warm-up started again in the same folder reads the pool back."""
    import datasets

    from llmgan import generator
    from llmgan.training import stages

    calls = []

    def fake_generate(model, tok, prompts, return_cut=False, **kw):
        calls.append(len(prompts))
        texts = [f"sample for {p[-1]['content']}" for p in prompts]
        return (texts, [False] * len(texts)) if return_cut else texts

    monkeypatch.setattr(generator, "generate_responses", fake_generate)

    from llmgan.adversarial.batch import EncodedBatch, select_rows

    class RecordingD:  # encodes a text as its length; records what each warm-up step trains on
        def __init__(self):
            self.steps, self.encoded = [], 0

        def encode(self, prompts, completions, response, cut=None):
            self.encoded += len(completions)
            h = lambda texts: torch.tensor([[float(len(t))] for t in texts])[:, :, None]  # noqa: E731
            ones = torch.ones(len(completions), 1, dtype=torch.bool)
            return EncodedBatch(list(prompts), list(completions), list(response), torch.arange(len(completions)),
                                h(completions), ones, h(response), ones)

        select = staticmethod(select_rows)

        def state_dict(self):  # RUN/teacher at the end of the warm-up (test_teacher reads a real one back)
            return {"model": {"w": torch.ones(2)}}

        def train_on(self, batch, steps=None, metrics=None):
            reals = [batch.reals[i] for i in batch.pair.tolist()]
            self.steps.append(list(zip([p[-1]["content"] for p in batch.prompts], batch.fakes, reals)))
            return {**(metrics or {}), "discriminator/loss": 0.5, "timing/discriminator": 0.02, "other": 1.0}

    rows = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": f"post {i}"}] for i in range(10)],
                                       "response": [f"reply {i}" for i in range(10)]})
    cfg = load_config(None, ["discriminator.warmup_pool=6", "discriminator.warmup_batch=4", "discriminator.warmup_steps=5"])
    d = RecordingD()
    stages.warmup_discriminator(cfg, None, None, rows, d, progress=False, run_dir=tmp_path)
    assert calls == [6] and d.encoded == 6  # the pool, sampled and encoded once (no held-out set here)
    pool = [json.loads(x) for x in (tmp_path / "warmup_pool.jsonl").read_text().splitlines()]
    assert len(pool) == 6 and all(r["fake"] == f"sample for {r['prompt'][-1]['content']}" for r in pool)
    assert [len(s) for s in d.steps] == [4] * 5
    seen = [t for s in d.steps for t in s]
    for post, fake, real in seen:  # every sample goes with its own prompt's real reply
        assert fake == f"sample for {post}" and real == "reply " + post.split()[-1]
    once = sorted(r["fake"] for r in pool)
    assert sorted(t[1] for t in seen[:6]) == once == sorted(t[1] for t in seen[6:12])  # two whole passes
    log = [json.loads(x) for x in (tmp_path / "warmup.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and {"timing/pool_samples", "timing/pool_encode"} <= set(log[0])
    assert [r["step"] for r in log[1:]] == [1, 2, 3, 4, 5]
    assert all({"timing/generate", "timing/discriminator", "discriminator/loss"} <= set(r) for r in log[1:])
    assert all("other" not in r for r in log)
    teacher = tmp_path / "teacher"
    assert json.loads((teacher / "teacher.json").read_text())["warmup_steps"] == 5
    assert load_config(teacher / "config.yaml") == cfg  # the config the teacher was warmed up under
    assert torch.equal(load_file(str(teacher / "discriminator.safetensors"))["w"], torch.ones(2))
    calls.clear()
    stages.warmup_discriminator(cfg, None, None, rows, RecordingD(), progress=False, run_dir=tmp_path)
    assert calls == []  # the same pool, read back
    other = load_config(None, ["discriminator.warmup_pool=6", "discriminator.warmup_steps=1", "generation.temperature=0.7"])
    stages.warmup_discriminator(other, None, None, rows, RecordingD(), progress=False, run_dir=tmp_path)
    assert calls == [6]  # other sampling settings: sampled again, not read back
    d = RecordingD()
    stages.warmup_discriminator(load_config(None, ["discriminator.warmup_pool=3", "discriminator.warmup_steps=2"]),
                                None, None, rows, d, progress=False)
    assert [len(s) for s in d.steps] == [16, 16]  # the default batch (4 prompts x 4) from a pool of 3: passes repeat


def test_a_warmup_pool_drawn_at_several_temperatures(tmp_path, monkeypatch):
    """discriminator.warmup_pool_temperatures: pool prompt i is sampled at temperatures[i % k] with seed + that
    index, one call per temperature; RUN/warmup_pool.jsonl records them, is read back only under the same ones,
    and a pool without them is sampled at generation.temperature in one call, as before."""
    import types

    import datasets

    from llmgan import generator
    from llmgan.training import stages

    calls = []

    def fake_generate(model, tok, prompts, temperature=None, seed=None, return_cut=False, **kw):
        calls.append((temperature, seed, [p[-1]["content"] for p in prompts]))
        texts = [f"{p[-1]['content']} at {temperature}" for p in prompts]
        return (texts, [False] * len(texts)) if return_cut else texts

    monkeypatch.setattr(generator, "generate_responses", fake_generate)
    prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(5)]
    reals = [f"r{i}" for i in range(5)]
    cfg = load_config(None, ["discriminator.warmup_pool=5", "discriminator.warmup_pool_temperatures=[0.7, 1]"])
    pool = tmp_path / "pool.jsonl"
    fakes = stages.start_model_samples(cfg, None, None, prompts, reals, 10, pool,
                                       temperatures=cfg.discriminator.warmup_pool_temperatures)
    assert calls == [(0.7, 10, ["p0", "p2", "p4"]), (1.0, 11, ["p1", "p3"])]
    assert fakes == ["p0 at 0.7", "p1 at 1.0", "p2 at 0.7", "p3 at 1.0", "p4 at 0.7"]
    assert json.loads(pool.read_text().splitlines()[0])["sampling"]["temperature"] == [0.7, 1.0]
    calls.clear()
    assert stages.start_model_samples(cfg, None, None, prompts, reals, 10, pool, temperatures=[0.7, 1.0]) == fakes
    assert calls == []  # read back under the same temperatures
    assert stages.start_model_samples(cfg, None, None, prompts, reals, 10, pool)[0] == "p0 at 1.0"
    assert calls == [(1.0, 10, ["p0", "p1", "p2", "p3", "p4"])]  # none given: generation.temperature, one call

    class PoolD:  # just enough of a discriminator for the warm-up to run on a pool
        def encode(self, prompts, completions, response, cut=None):
            return types.SimpleNamespace(fakes=completions)

        def select(self, pool, take):
            return take

        def train_on(self, batch, steps=None, metrics=None):
            return {"discriminator/loss": 0.5}

    rows = datasets.Dataset.from_dict({"prompt": prompts, "response": reals})
    calls.clear()
    stages.warmup_discriminator(load_config(None, ["discriminator.warmup_pool=4", "discriminator.warmup_steps=1",
                                                   "discriminator.warmup_pool_temperatures=[0.5, 0.9]"]),
                                None, None, rows, PoolD(), progress=False)
    assert [c[0] for c in calls] == [0.5, 0.9] and [len(c[2]) for c in calls] == [2, 2]


def test_train_warms_d_up_on_a_pool_with_relevance_negatives(tiny_model_dir, demo_data, tmp_path):
    """The real path of discriminator.warmup_pool: `llmgan train` samples and encodes the pool once, D's updates
    take sub-batches of it with their relevance negatives, and the game follows."""
    from llmgan.training.train import train

    run = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "pool", "train.steps=1", "discriminator.warmup_steps=3",
                         "discriminator.warmup_pool=6", "discriminator.warmup_batch=4", "discriminator.heldout_size=10",
                         "discriminator.condition_on_prompt=true", "discriminator.mismatched_negatives=0.5",
                         "discriminator.loss=bradley_terry", "discriminator.label_smoothing=0"), progress=False)
    assert len((run / "warmup_pool.jsonl").read_text().splitlines()) == 6
    rows = [json.loads(x) for x in (run / "warmup.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["step"] and not r.get("end_of_warmup")]
    assert len(steps) == 3 and all(math.isfinite(r["discriminator/loss"]) for r in steps)
    assert all("discriminator/mismatch_accuracy" in r for r in steps)  # the negatives came along in the sub-batches
    assert all(r["timing/generate"] == 0.0 for r in steps) and rows[0]["timing/pool_encode"] > 0
    assert read_metrics(run)[0]["discriminator/replay_samples"] > 0  # the game replays pool samples
    assert "`GRPOTrainer`" in (run / "README.md").read_text() and "None" not in (run / "README.md").read_text()
    from llmgan.training.runs import prepare_run_dir

    prepare_run_dir(load_config(str(run / "config.yaml")), resume=False, overwrite=True)  # its files are a run's
    assert not (run / "warmup_pool.jsonl").exists() and not (run / "heldout.jsonl").exists()


def test_start_model_samples_keep_the_generators_cut_flags(tmp_path, monkeypatch):
    """The pool and held-out samples are written with `cut_at_cap`; with_cut reads them back, and a file written
    before the flags were kept is sampled again rather than read with none (discriminator.mark_end needs them)."""
    from llmgan import generator
    from llmgan.training import stages

    calls = []

    def fake_generate(model, tok, prompts, return_cut=False, **kw):
        calls.append(len(prompts))
        texts = [f"s{i}" for i in range(len(prompts))]
        return (texts, [i % 2 == 0 for i in range(len(prompts))]) if return_cut else texts

    monkeypatch.setattr(generator, "generate_responses", fake_generate)
    prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(3)]
    reals = ["r0", "r1", "r2"]
    cfg, path = load_config(None, []), tmp_path / "samples.jsonl"
    assert stages.start_model_samples(cfg, None, None, prompts, reals, 7, path, with_cut=True) == (
        ["s0", "s1", "s2"], [True, False, True])
    assert [json.loads(x)["cut_at_cap"] for x in path.read_text().splitlines()] == [True, False, True]
    assert stages.start_model_samples(cfg, None, None, prompts, reals, 7, path) == ["s0", "s1", "s2"]
    assert stages.start_model_samples(cfg, None, None, prompts, reals, 7, path, with_cut=True)[1] == [True, False, True]
    assert calls == [3]  # both read back
    old = [{k: v for k, v in json.loads(x).items() if k != "cut_at_cap"} for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert stages.start_model_samples(cfg, None, None, prompts, reals, 7, path) == ["s0", "s1", "s2"]
    assert calls == [3]  # without the flags asked for, an old file is still read back
    assert stages.start_model_samples(cfg, None, None, prompts, reals, 7, path, with_cut=True)[1] == [True, False, True]
    assert calls == [3, 3]  # asked for, it is sampled again


def test_train_with_mark_end_gives_d_the_generators_cut_flags(tiny_model_dir, demo_data, tmp_path):
    """discriminator.mark_end end to end: the pool and held-out samples keep their cut flags, and the game's
    completions (TRL's ids) reach D's replay buffer with theirs, so no mark is read from a stripped text's length."""
    from llmgan.training.train import train

    run = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "mark", "train.steps=1", "discriminator.warmup_steps=1",
                         "discriminator.warmup_pool=4", "discriminator.warmup_batch=4", "discriminator.heldout_size=10",
                         "discriminator.mark_end=true", "discriminator.max_response_tokens=5"), progress=False)
    for name, n in (("warmup_pool.jsonl", 4), ("heldout.jsonl", 10)):
        rows = [json.loads(x) for x in (run / name).read_text().splitlines()]
        assert len(rows) == n and all(isinstance(r["cut_at_cap"], bool) for r in rows)
    states = sorted(run.rglob("discriminator_state.json"))
    assert states
    items = json.loads(states[-1].read_text())["replay"]["items"]
    assert items and all(isinstance(it["cut"], bool) for it in items)


def test_sft_resumes_from_its_checkpoint(tiny_model_dir, demo_data, tmp_path, monkeypatch):
    """SFT writes a checkpoint every train.save_every steps; an SFT cut short continues from it and ends where
    an uninterrupted one does."""
    from llmgan.training import runs
    from llmgan.training.runs import checkpoints
    from llmgan.training.sft import sft

    cards = []  # the run card is the same at every checkpoint: written once per start
    monkeypatch.setattr(runs, "run_card", lambda *a, _card=runs.run_card: cards.append(1) or _card(*a))
    extra = ("train.sft_steps=4", "train.save_every=2", "train.sft_lr=5e-3", "train.keep_checkpoints=2")
    full = sft(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "full", *extra), progress=False)
    assert [p.name for p in checkpoints(full)] == ["checkpoint-2", "checkpoint-4"] and len(cards) == 1
    card = (full / "README.md").read_text()  # llmgan's card, not TRL's, which calls a local start model 'None'
    assert f"starting from {tiny_model_dir}" in card and "`SFTTrainer`" in card and "None" not in card
    # as if killed after step 3: checkpoint-2 complete, a metrics row past it, no final model
    cut = tmp_path / "cut"
    shutil.copytree(full, cut, ignore=shutil.ignore_patterns("checkpoint-4", "final", "plots"))
    rows = read_metrics(full)
    (cut / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= 3))
    resumed = sft(tiny_cfg(tiny_model_dir, demo_data, cut, *extra), progress=False, resume=True)
    # steps 3-4 were trained again after checkpoint-2 (step 3's old row dropped), nothing before it
    assert [r["step"] for r in read_metrics(resumed) if "sft/loss" in r] == [r["step"] for r in rows if "sft/loss" in r]
    a = load_file(full / "final" / "generator" / "adapter_model.safetensors")
    b = load_file(resumed / "final" / "generator" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the machine that ran it, one line for the start and one for the resume (copied along with the run)
    from llmgan.machine import cpu_id, cpu_model, read_cpuinfo

    machine = [json.loads(x) for x in (cut / "machine.jsonl").read_text().splitlines()]
    assert [m["resume"] for m in machine] == [False, True]
    assert all(m["cpu"] == cpu_model() not in ("", "unknown") and m["torch"] == torch.__version__ for m in machine)
    assert all(m["cpu_id"] == cpu_id(read_cpuinfo()) for m in machine)  # None only without /proc/cpuinfo (tested apart)
    assert all(m["torch_threads"] == torch.get_num_threads() and len(m["cuda_devices"]) == torch.cuda.device_count()
               for m in machine)
    # killed after its last checkpoint, before final/: the resume trains nothing more and final/ holds that
    # checkpoint's weights. 3 steps, so that the last one falls inside an epoch (here 4 steps are one epoch: the
    # run above ends at epoch 1.0 in trainer_state.json): transformers alone would train a step 4 and write checkpoint-4
    short = ("train.sft_steps=3", "train.save_every=3", "train.sft_lr=5e-3")
    three = sft(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "three", *short), progress=False)
    done = tmp_path / "done"
    shutil.copytree(three, done, ignore=shutil.ignore_patterns("final", "plots"))
    sft(tiny_cfg(tiny_model_dir, demo_data, done, *short), progress=False, resume=True)
    assert [p.name for p in checkpoints(done)] == ["checkpoint-3"]
    assert [r["step"] for r in read_metrics(done) if "sft/loss" in r] == [1, 2, 3]
    a = load_file(three / "final" / "generator" / "adapter_model.safetensors")
    c = load_file(done / "final" / "generator" / "adapter_model.safetensors")
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


def test_an_interrupted_warm_start_keeps_its_sft_checkpoints(tmp_path):
    """A fresh run stopped during its SFT stage (Ctrl-C) keeps the folder when the SFT has a checkpoint, so
    `llmgan train --resume` can continue it; with nothing kept the folder goes (the retry is not refused)."""
    from llmgan.training.runs import COMPLETE_MARKER, SFT_DIR, removed_if_nothing_kept

    for with_checkpoint in (True, False):
        run = tmp_path / f"run-{with_checkpoint}"
        (run / SFT_DIR).mkdir(parents=True)
        (run / "config.yaml").write_text("{}")
        if with_checkpoint:
            (run / SFT_DIR / "checkpoint-10").mkdir()
            (run / SFT_DIR / "checkpoint-10" / COMPLETE_MARKER).write_text("10")
        with pytest.raises(KeyboardInterrupt):
            with removed_if_nothing_kept(run, fresh=True):
                raise KeyboardInterrupt
        assert run.exists() == with_checkpoint


def test_train_resume_continues_a_cut_short_warm_start(tiny_model_dir, demo_data, tmp_path):
    """`llmgan train --resume RUN` on a run stopped during its SFT stage continues the SFT from its checkpoint
    (not from step 0), then trains adversarially."""
    import dataclasses

    from llmgan.training.runs import SFT_DIR, prepare_run_dir
    from llmgan.training.sft import sft
    from llmgan.training.train import train

    extra = ("train.sft_warm_start=true", "train.sft_steps=4", "train.save_every=2", "train.sft_lr=5e-3",
             "train.steps=1")
    run = tmp_path / "warm"
    cfg = tiny_cfg(tiny_model_dir, demo_data, run, *extra)
    prepare_run_dir(cfg, resume=False)
    # the state a stop right after the SFT's checkpoint-2 leaves: that checkpoint, steps 1-2 logged, no final model
    cut = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(run / SFT_DIR), sft_steps=2,
                                                             sft_warm_start=False))
    sft(cut, progress=False)
    shutil.rmtree(run / SFT_DIR / "final")
    assert (run / SFT_DIR / "checkpoint-2").is_dir()
    before = read_metrics(run / SFT_DIR)
    train(cfg, resume=True, progress=False)
    after = read_metrics(run / SFT_DIR)
    assert [r["step"] for r in after if "sft/loss" in r] == [1, 2, 3, 4]  # 3-4 after the resume: none twice
    assert after[:len(before)] == before  # steps 1-2 are the rows written before the stop (a restart rewrites them)
    assert (run / SFT_DIR / "final" / "generator").is_dir() and [r["step"] for r in read_metrics(run)] == [1]
