"""The warmed-up discriminator as a reranker (llmgan.adversarial.teacher, `llmgan generate --best-of N --teacher`):
D scores completions without their real replies as it scores them in training, RUN/teacher round-trips, and
generate keeps, per prompt, the draw the teacher scores highest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import DEMO_FILE
from llmgan.adversarial.teacher import (Teacher, TeacherMean, best_of, check_teacher, save_teacher,
                                       score_completions, score_with_many, soft_best_of)
from llmgan.cli import main
from llmgan.config import load_config
from llmgan.data import PrepareOptions, load_prepared, prepare
from llmgan.errors import LlmganError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file, split on "\\n" only (as llmgan writes them): str.splitlines would also split a text
    at U+2028, which a random tiny model can write inside a row."""
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]

SYS = "You are a social media user. Write a reply to the following post."
POSTS = ["Vote today!", "Taxes are too high.", "The council closed two libraries.", "Rain again this weekend."]
REALS = ["lol no", "agreed, way too high", "who voted for this??", "typical"]
FAKES = ["As an AI, I think voting is an important civic duty for everyone.",
         "Taxes are a complex topic with many perspectives to consider.",
         "Libraries are important community resources that serve many people.",
         "Rainy weekends can be a great opportunity to relax indoors."]


def conv(text: str) -> list[dict]:
    return [{"role": "system", "content": SYS}, {"role": "user", "content": text}]


def test_best_of_picks_the_highest_logit_first_on_ties():
    logits = torch.tensor([[0.1, 2.0, -1.0],
                           [0.5, 2.0, 3.0]])  # [2 draws, 3 prompts]
    assert best_of(logits).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"\[N draws, M prompts\]"):
        best_of(torch.zeros(3))


def test_soft_best_of_keeps_each_draw_in_proportion_to_exp_logit():
    """Importance resampling: logits (0, log 3) over 20,000 prompts keep draw 1 three times in four; a draw at
    -inf is never kept; a tiny temperature is argmax; seeded generators repeat."""
    m = 20_000
    logits = torch.tensor([[0.0], [math.log(3.0)]]).expand(2, m)
    share = soft_best_of(logits, generator=torch.Generator().manual_seed(0)).float().mean().item()
    assert abs(share - 0.75) < 0.015
    # temperature 2 flattens the ratio to sqrt(3): draw 1 kept sqrt(3) / (1 + sqrt(3)) = 0.634 of the time
    share_t2 = soft_best_of(logits, 2.0, torch.Generator().manual_seed(0)).float().mean().item()
    assert abs(share_t2 - math.sqrt(3) / (1 + math.sqrt(3))) < 0.015
    blocked = torch.tensor([[float("-inf"), 0.0, 1.0]] * 4).T  # [3 draws, 4 prompts]
    assert set(soft_best_of(blocked, generator=torch.Generator().manual_seed(1)).tolist()) <= {1, 2}
    spread = torch.tensor([[0.1, 2.0, -1.0], [0.5, 2.5, 3.0]])
    assert soft_best_of(spread, 1e-4).tolist() == best_of(spread).tolist()
    a, b = (soft_best_of(logits[:, :50], generator=torch.Generator().manual_seed(7)) for _ in range(2))
    assert a.tolist() == b.tolist()
    with pytest.raises(ValueError, match="temperature must be above 0"):
        soft_best_of(spread, 0.0)
    with pytest.raises(ValueError, match=r"\[N draws, M prompts\]"):
        soft_best_of(torch.zeros(3))


def tiny_teacher_cfg(model_dir: Path, *extra: str):
    return load_config(None, [f"model.name={model_dir}", "data.max_prompt_tokens=32", "discriminator.hidden_layer=-1",
                              "discriminator.width=32", "discriminator.heads=2", "discriminator.layers=1",
                              "discriminator.max_response_tokens=16", "discriminator.lr=3e-3",
                              "discriminator.condition_on_prompt=true", *extra])


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    return train_tiny_teacher(tiny_model_dir, tmp_path_factory.mktemp("run") / "teacher")


def train_tiny_teacher(tiny_model_dir: Path, folder: Path):
    """A tiny D trained on (human-like real, assistant-like fake) and saved as RUN/teacher; returns (D, folder)."""
    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.adversarial.reward import DiscriminatorReward
    from llmgan.models import load_model, load_tokenizer

    cfg = tiny_teacher_cfg(tiny_model_dir)
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir)).eval().requires_grad_(False)
    enc = HiddenStateEncoder.from_settings(cfg.discriminator, policy=model, tokenizer=tok, reference_model=model,
                                           max_prompt_tokens=cfg.data.max_prompt_tokens)
    disc = DiscriminatorReward(cfg.discriminator, cfg.reward, enc, seed=cfg.train.seed)
    prompts = [conv(p) for p in POSTS]
    for _ in range(15):
        disc.train_step(prompts, FAKES, REALS)
    return disc, save_teacher(cfg, disc, folder, {"warmup_steps": 15})


def test_d_scores_completions_alone_as_in_training(trained):
    """score_completions (no real replies) gives the fake logits that `score` gives in a training batch, and D learned."""
    disc, _ = trained
    prompts = [conv(p) for p in POSTS]
    alone = score_completions(disc, prompts, FAKES, chunk=3)
    _, in_batch = disc.score(disc.encode(prompts, FAKES, REALS))
    assert alone.shape == (4,) and torch.allclose(alone, in_batch.cpu(), atol=1e-5)
    reals = score_completions(disc, prompts, REALS)
    assert (reals > alone).all()  # 15 updates on four pairs: D ranks each real above its fake


def test_discriminators_on_one_encoder_encode_each_text_once(trained):
    """score_with_many: discriminators whose encoders agree (the same model, tokenizer, layer, caps) share one
    encode per chunk, and each gives the logits it gives alone; one on another layer encodes on its own."""
    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.adversarial.reward import DiscriminatorReward

    disc, _ = trained
    cfg = tiny_teacher_cfg(Path("unused"))
    model, tok = disc.encoder.model, disc.encoder.tokenizer

    def other_d(layer: int, seed: int):
        cfg.discriminator.hidden_layer = layer
        enc = HiddenStateEncoder.from_settings(cfg.discriminator, policy=model, tokenizer=tok, reference_model=model,
                                               max_prompt_tokens=cfg.data.max_prompt_tokens)
        return DiscriminatorReward(cfg.discriminator, cfg.reward, enc, seed=seed)

    same, other = other_d(-1, 1), other_d(1, 2)
    prompts = [conv(p) for p in POSTS]
    texts = FAKES[:2] + REALS[2:]
    alone = torch.stack([score_completions(d, prompts, texts) for d in (disc, same, other)])
    assert (alone[0] - alone[1]).abs().max() > 1e-3  # two different discriminators, not one read twice
    calls = {}
    for name, d in (("disc", disc), ("same", same), ("other", other)):
        def counted(*a, _encode=d.encoder.encode, _name=name, **kw):
            calls[_name] = calls.get(_name, 0) + 1
            return _encode(*a, **kw)
        d.encoder.encode = counted
    try:
        together = score_with_many([disc, same, other], prompts, texts, chunk=2)
    finally:
        for d in (disc, same, other):
            del d.encoder.encode
    assert together.shape == (3, 4) and torch.allclose(together, alone, atol=1e-6)
    assert calls == {"disc": 2, "other": 2}  # 2 chunks each; `same` read disc's states


def test_a_teacher_with_an_end_mark_reads_each_draws_cut_flag(trained):
    """A teacher with discriminator.mark_end scores a draw by the generator's cut flag (`cut_at_cap`), not by the
    stored text's length; one without it ignores the flag; the two never share an encoding (`encoder_key`)."""
    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.adversarial.reward import DiscriminatorReward

    disc, _ = trained
    cfg = tiny_teacher_cfg(Path("unused"), "discriminator.mark_end=true", "generation.max_new_tokens=17")
    model, tok = disc.encoder.model, disc.encoder.tokenizer
    enc = HiddenStateEncoder.from_settings(cfg.discriminator, policy=model, tokenizer=tok, reference_model=model,
                                           max_prompt_tokens=cfg.data.max_prompt_tokens)
    marked = DiscriminatorReward(cfg.discriminator, cfg.reward, enc, seed=3)
    prompts, texts = [conv(p) for p in POSTS[:2]] * 2, FAKES[:2] * 2
    flags = [True, True, False, None]  # the same two texts, once cut at the cap, once ended (or unknown)
    alone = [score_completions(d, prompts, texts, cut=flags) for d in (disc, marked)]
    assert torch.allclose(alone[0][:2], alone[0][2:])  # no mark: the flag is not read
    assert (alone[1][:2] - alone[1][2:]).abs().min() > 1e-4  # a cut draw reads without the end mark
    assert torch.allclose(score_completions(marked, prompts[2:], texts[2:]), alone[1][2:])  # None: the length decides
    together = score_with_many([disc, marked], prompts, texts, cut=flags)
    assert torch.allclose(together, torch.stack(alone), atol=1e-6)
    with pytest.raises(ValueError, match="one cut flag per completion"):
        score_with_many([marked], prompts, texts, cut=flags[:3])


def test_teacher_round_trip(trained, tiny_model_dir):
    """Teacher.load rebuilds the encoder from config.yaml's start model and reads D back: the same logits as the
    trained D, not an untrained D's."""
    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.adversarial.reward import DiscriminatorReward

    disc, folder = trained
    # only what scoring needs: no optimizer, replay buffer or temporary file
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "discriminator.safetensors", "teacher.json"]
    summary = json.loads((folder / "teacher.json").read_text())
    assert summary == {"start_model": str(tiny_model_dir), "start_model_path": str(tiny_model_dir.resolve()),
                       "warmup_steps": 15}
    teacher = Teacher.load(folder)
    prompts = [conv(p) for p in POSTS]
    texts = FAKES[:2] + REALS[2:]
    assert torch.allclose(teacher.logits(prompts, texts), score_completions(disc, prompts, texts), atol=1e-5)
    fresh = DiscriminatorReward(teacher.cfg.discriminator, teacher.cfg.reward,
                                HiddenStateEncoder.from_settings(teacher.cfg.discriminator, policy=disc.encoder.model,
                                                                 tokenizer=disc.encoder.tokenizer,
                                                                 reference_model=disc.encoder.model,
                                                                 max_prompt_tokens=32), seed=teacher.cfg.train.seed)
    assert (score_completions(fresh, prompts, texts) - teacher.logits(prompts, texts)).abs().max() > 1e-3


def test_a_teacher_whose_weights_do_not_fit_its_config_is_refused(trained, tmp_path):
    import shutil

    _, folder = trained
    other = shutil.copytree(folder, tmp_path / "teacher")
    text = (other / "config.yaml").read_text()
    (other / "config.yaml").write_text(text.replace("width: 32", "width: 48"))
    with pytest.raises(LlmganError, match=r"discriminator\.safetensors does not fit the discriminator"):
        Teacher.load(other)


def test_a_relative_start_model_is_found_from_another_directory(trained, tiny_model_dir, tmp_path, monkeypatch):
    """A run started with a relative model.name (runs/x/sft/final/generator) leaves a config that only resolves
    from where it started: the teacher falls back to the absolute path teacher.json recorded, and names the model
    when that is gone too."""
    import shutil

    disc, folder = trained
    monkeypatch.chdir(tiny_model_dir.parent)
    relative = load_config(folder / "config.yaml")
    relative.model.name = tiny_model_dir.name
    moved = save_teacher(relative, disc, tmp_path / "teacher")
    monkeypatch.chdir(tmp_path)  # model.name no longer resolves from here
    texts = FAKES[:2] + REALS[2:]
    prompts = [conv(p) for p in POSTS]
    assert torch.allclose(Teacher.load(moved).logits(prompts, texts), score_completions(disc, prompts, texts), atol=1e-5)
    gone = shutil.copytree(tiny_model_dir, tmp_path / "gone")
    monkeypatch.chdir(tmp_path.parent)
    relative.model.name = str(gone.relative_to(tmp_path.parent))
    save_teacher(relative, disc, tmp_path / "teacher2")
    shutil.rmtree(gone)
    with pytest.raises(LlmganError, match=r"start model .*gone.* is not found"):
        Teacher.load(tmp_path / "teacher2")


def test_a_folder_that_is_not_a_teacher_is_named(tmp_path):
    with pytest.raises(LlmganError, match="no such folder"):
        check_teacher(tmp_path / "nope")
    (tmp_path / "config.yaml").write_text("{}\n")
    with pytest.raises(LlmganError, match=r"missing discriminator\.safetensors"):
        check_teacher(tmp_path)


@pytest.fixture(scope="module")
def demo_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "demo"
    prepare(PrepareOptions(inputs=[str(DEMO_FILE)], output=str(out), task="reply"))
    return out


def test_generate_best_of_keeps_the_draw_the_teacher_ranks_highest(trained, demo_ds, tiny_model_dir, tmp_path, capsys):
    _, folder = trained
    out = tmp_path / "best.jsonl"
    args = ["generate", str(demo_ds), "--model", str(tiny_model_dir), "-o", str(out), "--limit", "5",
            "--max-new-tokens", "6", "--seed", "3", "--quiet"]
    assert main(args + ["--best-of", "3", "--teacher", str(folder)]) == 0
    rows = jsonl(out)
    draws = [[r["generated"] for r in jsonl(tmp_path / f"best.jsonl.draws/draw-{k}.jsonl")]
             for k in range(3)]
    assert len(rows) == 5 and all(len(d) == 5 for d in draws)
    assert any(len({d[i] for d in draws}) > 1 for i in range(5))  # the draws differ, so the pick means something
    teacher = Teacher.load(folder)
    prompts = [list(m) for m in load_prepared(demo_ds)["test"].select(range(5))["prompt"]]
    logits = torch.stack([teacher.logits(prompts, d) for d in draws])
    assert [r["generated"] for r in rows] == [draws[k][i] for i, k in enumerate(logits.argmax(0).tolist())]
    cut = [[r["cut_at_cap"] for r in jsonl(tmp_path / f"best.jsonl.draws/draw-{k}.jsonl")]
           for k in range(3)]  # each kept pick carries its draw's cut_at_cap
    assert [r["cut_at_cap"] for r in rows] == [cut[k][i] for i, k in enumerate(logits.argmax(0).tolist())]
    # draw k is plain sampling with seed --seed + k, at the temperature and top-p of the teacher's warm-up samples
    # (its config's, the defaults of --best-of; plain generate's own are 0.8 and 0.95)
    printed = capsys.readouterr().out
    assert "--temperature 1: as the teacher's warm-up samples" in printed and "--top-p 1: as the" in printed
    assert main(args[:-1] + ["-o", str(tmp_path / "plain.jsonl"), "--seed", "4", "--quiet"]) == 0
    assert [r["generated"] for r in jsonl(tmp_path / "plain.jsonl")] != draws[1]
    assert main(args[:-1] + ["-o", str(tmp_path / "plain.jsonl"), "--seed", "4", "--quiet", "--temperature", "1",
                             "--top-p", "1"]) == 0
    assert [r["generated"] for r in jsonl(tmp_path / "plain.jsonl")] == draws[1]
    # run again: the draws are read back, the same picks
    capsys.readouterr()
    assert main(args[:-1] + ["--best-of", "3", "--teacher", str(folder)]) == 0
    assert capsys.readouterr().out.count("read back") == 3
    assert jsonl(out) == rows
    # draws kept without --end-ramp are not read back as draws with it: they are sampled again and replace them
    assert main(args[:-1] + ["--best-of", "3", "--teacher", str(folder), "--end-ramp", "2"]) == 0
    printed = capsys.readouterr().out
    assert "read back" not in printed and "rise from new token 2 to +8 at the cap of 6" in printed
    kept = jsonl(tmp_path / "best.jsonl.draws/draw-0.jsonl")
    assert {r["sampling"]["end_ramp"] for r in kept} == {2}


def test_several_teachers_rank_by_their_mean_logit(trained, demo_ds, tiny_model_dir, tmp_path, capsys):
    """--teacher A B: TeacherMean's logit is the mean of the teachers' (with one teacher, that teacher's exactly),
    and generate keeps the draw with the highest mean, which is not teacher A's own pick for every prompt; serve's
    loader takes several folders the same way. A missing --best-of names every folder given."""
    import shutil

    from safetensors.torch import load_file, save_file

    from llmgan.serving.rerank import load_best_of

    _, folder = trained
    other = shutil.copytree(folder, tmp_path / "other")  # a second teacher: the same D with its weights moved
    gen = torch.Generator().manual_seed(0)
    weights = load_file(str(other / "discriminator.safetensors"))
    save_file({k: v + 0.5 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in weights.items()},
              str(other / "discriminator.safetensors"))
    out = tmp_path / "best.jsonl"
    args = ["generate", str(demo_ds), "--model", str(tiny_model_dir), "-o", str(out), "--limit", "6",
            "--max-new-tokens", "6", "--seed", "3", "--quiet", "--best-of", "3"]
    assert main(args + ["--teacher", str(folder), str(other)]) == 0
    assert f"under {folder} + {other}" in capsys.readouterr().out
    draws = [[r["generated"] for r in jsonl(tmp_path / f"best.jsonl.draws/draw-{k}.jsonl")] for k in range(3)]
    prompts = [list(m) for m in load_prepared(demo_ds)["test"].select(range(6))["prompt"]]
    a, b = Teacher.load(folder), Teacher.load(other)
    la = torch.stack([a.logits(prompts, d) for d in draws])  # [3 draws, 6 prompts]
    lb = torch.stack([b.logits(prompts, d) for d in draws])
    assert (la - lb).abs().max() > 0.1  # two teachers that disagree
    both = TeacherMean.load([folder, other])
    # one copy of the start model between them, so each text is encoded once for both
    assert both.teachers[0].discriminator.encoder.model is both.teachers[1].discriminator.encoder.model
    assert torch.allclose(torch.stack([both.logits(prompts, d) for d in draws]), (la + lb) / 2, atol=1e-5)
    assert torch.equal(TeacherMean.load([folder]).logits(prompts, draws[0]), la[0])
    pick = ((la + lb) / 2).argmax(0)
    assert not torch.equal(pick, la.argmax(0))  # so the rows below tell the mean's pick from A's
    assert [r["generated"] for r in jsonl(out)] == [draws[k][i] for i, k in enumerate(pick.tolist())]
    assert main(args[:-2] + ["--teacher", str(folder), str(other)]) == 2
    assert f"--best-of 1 with --teacher {folder} {other}: --best-of N > 1 needs" in capsys.readouterr().err
    import yaml

    cfg = yaml.safe_load((other / "config.yaml").read_text())  # the second teacher's samples drawn at 0.7
    cfg["generation"]["temperature"] = 0.7
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    best = load_best_of([str(folder), str(other)], 2, device="cpu", default_system=None, text_of=str)
    printed = capsys.readouterr().out
    assert len(best.teacher.teachers) == 2 and "the 2 teachers rank by their mean logit" in printed
    # serve's check reads every teacher, not the first only, and names the teacher that differs
    assert f"temperature 1 (the teacher's samples: 0.7) for the teacher in {other}" in printed
    # the embedded default served, not the teachers' start model: said once for the two teachers that share it
    line = (f"the model the embedded default (the teacher's samples: {tiny_model_dir}) for the teachers in "
            f"{folder}, {other}")
    assert line in printed and printed.count("the model the embedded default") == 1
    assert best.sampling_differences({}) == [f"temperature 1 (the teacher's samples: 0.7) for the teacher in {other}"]
    assert best.sampling_differences({"temperature": 0.7}) == [
        f"temperature 0.7 (the teacher's samples: 1) for the teacher in {folder}"]
    # transformers serve turns a frequency_penalty into a repetition penalty, which no warm-up sample had
    assert best.sampling_differences({"temperature": 0.7, "frequency_penalty": 0.5}) == [
        f"temperature 0.7 (the teacher's samples: 1) for the teacher in {folder}",
        "frequency_penalty 0.5 (the teacher's samples: 0)"]
    assert best.sampling_differences({"temperature": 0.7, "frequency_penalty": 0}) == [
        f"temperature 0.7 (the teacher's samples: 1) for the teacher in {folder}"]


def test_teacher_ensemble_script_picks_as_generate_best_of_does(trained, demo_ds, tiny_model_dir, tmp_path):
    """bench/teacher_ensemble.py with the one teacher that chose: its pick is `llmgan generate --best-of`'s, and the
    summary's cut share is that of the picks."""
    import shutil
    import subprocess
    import sys

    _, folder = trained
    out = tmp_path / "best.jsonl"
    assert main(["generate", str(demo_ds), "--model", str(tiny_model_dir), "-o", str(out), "--limit", "5",
                 "--max-new-tokens", "6", "--seed", "3", "--quiet", "--best-of", "2", "--teacher", str(folder)]) == 0
    script = Path(__file__).resolve().parents[1] / "bench" / "teacher_ensemble.py"
    draws = [str(tmp_path / f"best.jsonl.draws/draw-{k}.jsonl") for k in range(2)]
    done = subprocess.run([sys.executable, str(script), "--teachers", str(folder), "--draws", *draws,
                           "-o", str(tmp_path / "rank")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    picks = jsonl(tmp_path / "rank" / "best-2-t0.jsonl")
    rows = jsonl(out)
    assert [r["generated"] for r in picks] == [r["generated"] for r in rows]
    summary = json.loads((tmp_path / "rank" / "summary.json").read_text())
    share = 100 * sum(r["cut_at_cap"] for r in rows) / len(rows)
    assert summary["picks"]["t0"]["cut_at_cap"] == f"{share:.1f} %"
    # the same draws as plain `llmgan generate` output (the prompt's last user message as a string, the system
    # message beside it): the teacher reads the same chat-formatted prompts, so the same logits and picks
    from llmgan.generator import output_rows
    from llmgan.io import write_rows

    plain = []
    for k, f in enumerate(draws):
        d = jsonl(Path(f))
        assert isinstance(d[0]["prompt"], list)  # so the rows below differ in form
        plain.append(str(write_rows(output_rows([r["prompt"] for r in d], [r["real"] for r in d],
                                                [r["generated"] for r in d]), tmp_path / f"plain-{k}.jsonl")))
    # --calibrate reads the run's held-out set beside the teacher: refused before any model loads where it is missing
    done = subprocess.run([sys.executable, str(script), "--teachers", str(folder), "--draws", *plain, "--calibrate",
                           "-o", str(tmp_path / "refused")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "heldout.jsonl" in done.stderr and "Loading" not in done.stderr
    done = subprocess.run([sys.executable, str(script), "--teachers", str(folder), "--draws", *plain, "--soft-seeds",
                           "0", "--soft-temperature", "1", "2", "-o", str(tmp_path / "refused")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "one per teacher (1)" in done.stderr and "Loading" not in done.stderr
    copied = shutil.copytree(folder, tmp_path / "run" / "teacher")
    write_rows([{"prompt": r["prompt"], "real": r["real"], "fake": r["generated"]} for r in jsonl(Path(draws[0]))],
               tmp_path / "run/heldout.jsonl")  # as a warm-up writes it: the conversation, a real and a sample
    done = subprocess.run([sys.executable, str(script), "--teachers", str(copied), "--draws", *plain, "--soft-seeds",
                           "0", "--calibrate", "-o", str(tmp_path / "rank-plain")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads((tmp_path / "rank-plain" / "summary.json").read_text())
    # --soft-seeds: an importance-resampled pick per prompt, one of that prompt's draws; --calibrate: a Platt slope
    soft = jsonl(tmp_path / "rank-plain" / "soft-2-t0-s0.jsonl")
    by_draw = [jsonl(Path(f)) for f in plain]
    assert [r["generated"] in {d[i]["generated"] for d in by_draw} for i, r in enumerate(soft)] == [True] * len(rows)
    assert again["soft_temperature"] == [1.0] and isinstance(again["platt_slope"][0], float)
    assert again["picks"]["t0"]["mean_logit_under_each_teacher"] == pytest.approx(
        summary["picks"]["t0"]["mean_logit_under_each_teacher"], abs=1e-5)
    picks = jsonl(tmp_path / "rank-plain" / "best-2-t0.jsonl")
    assert [(r["prompt"], r["system"], r["generated"]) for r in picks] == \
        [(r["prompt"], r["system"], r["generated"]) for r in rows]


@pytest.mark.parametrize("extra, message", [
    (["--best-of", "2"], "--best-of N > 1 needs --teacher"),
    (["--teacher", "somewhere"], "--teacher needs --best-of N > 1"),
    (["--best-of", "2", "--teacher", "somewhere"], "--teacher somewhere: no such folder"),
    (["--best-of", "2", "--teacher", "somewhere", "--greedy"], "greedy decoding gives the same response every draw"),
])
def test_best_of_arguments_are_checked_before_any_model_loads(demo_ds, tmp_path, capsys, extra, message):
    assert main(["generate", str(demo_ds), "--model", str(tmp_path / "no-model"), "-o", str(tmp_path / "o.jsonl"),
                 *extra]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_sampling_differences_name_each_setting_the_teacher_s_samples_were_not_drawn_with(tiny_model_dir):
    from llmgan.adversarial.teacher import sampling_differences

    cfg = tiny_teacher_cfg(tiny_model_dir, "generation.temperature=1.0", "generation.top_p=1.0",
                           "generation.max_new_tokens=71")
    assert sampling_differences(cfg, 1.0, 1.0, 71) == [] and sampling_differences(cfg, 1, 1) == []
    assert sampling_differences(cfg, 0.92, 1.0, 71) == ["temperature 0.92 (the teacher's samples: 1)"]
    assert sampling_differences(cfg, 1.0, 0.95, 80, end_ramp=50) == [
        "top-p 0.95 (the teacher's samples: 1)", "at most 80 new tokens (the teacher's samples: 71)",
        "an end-of-text ramp (the teacher's samples had none)"]
    assert sampling_differences(cfg, 1.0, 1.0, None) == []  # the cap left out: not compared
    pooled = tiny_teacher_cfg(tiny_model_dir, "generation.temperature=1.0", "generation.top_p=1.0",
                              "discriminator.warmup_pool=8", "discriminator.warmup_pool_temperatures=[0.7,0.85,1.0]")
    assert all(sampling_differences(pooled, t, 1.0) == [] for t in (0.7, 0.8, 0.92, 1.0))  # inside the pool's range
    assert sampling_differences(pooled, 0.6, 1.0) == ["temperature 0.6 (the teacher's samples: 0.7 to 1)"]
    assert sampling_differences(pooled, 1.1, 1.0) == ["temperature 1.1 (the teacher's samples: 0.7 to 1)"]


def test_generate_best_of_warns_before_sampling_when_the_teacher_s_samples_were_drawn_otherwise(
        trained, demo_ds, tiny_model_dir, tmp_path, capsys):
    """The warning comes before any model loads (here the model folder does not exist, so the command stops
    there) and names what differs, the model included; drawn as the teacher's samples were, there is none."""
    _, folder = trained
    teacher_cap = load_config(folder / "config.yaml").generation.max_new_tokens
    args = ["generate", str(demo_ds), "-o", str(tmp_path / "o.jsonl"), "--best-of", "2", "--teacher", str(folder),
            "--max-new-tokens", str(teacher_cap), "--limit", "2", "--quiet"]
    assert main(args + ["--model", str(tmp_path / "no-model"), "--temperature", "0.7"]) != 0
    printed = capsys.readouterr()
    assert "warning: these draws are sampled otherwise than the samples --teacher" in printed.out
    assert f"--model {tmp_path / 'no-model'} (the teacher's samples: {tiny_model_dir})" in printed.out
    assert "temperature 0.7 (the teacher's samples: 1)" in printed.out and "no-model" in printed.err
    assert main(args + ["--model", str(tiny_model_dir), "--temperature", "1.0", "--top-p", "1.0"]) == 0
    assert "warning" not in capsys.readouterr().out and len(jsonl(tmp_path / "o.jsonl")) == 2


def test_same_model_compares_folders_resolved_and_ids_as_written(tmp_path):
    from llmgan.adversarial.teacher import same_model

    (tmp_path / "m").mkdir()
    (tmp_path / "x").mkdir()
    assert same_model(str(tmp_path / "m"), str(tmp_path / "m") + "/") and same_model(str(tmp_path / "m"), str(tmp_path / "x/../m"))
    assert not same_model(str(tmp_path / "m"), str(tmp_path)) and not same_model(str(tmp_path / "m"), "org/m")
    assert same_model("org/m", "org/m") and not same_model("org/m", "org/n")
    assert same_model(None, "default") and same_model("", None) and not same_model(None, "org/m")
    assert not same_model(str(tmp_path / "m"), None)


def test_same_model_knows_the_embedded_default_by_its_converted_folder(tmp_path, monkeypatch):
    """The default given as null in one place and as its folder in $LLMGAN_CACHE in the other is one model (the
    thirty-third session's note: this warned about a mismatch that was none)."""
    from llmgan.adversarial.teacher import same_model
    from llmgan.models import DEFAULT_MODEL_NAME

    monkeypatch.setenv("LLMGAN_CACHE", str(tmp_path / "cache"))
    converted = tmp_path / "cache" / "models" / DEFAULT_MODEL_NAME
    assert not same_model(None, str(converted))  # not converted yet: no folder to compare
    converted.mkdir(parents=True)
    (tmp_path / "other").mkdir()
    assert same_model(None, str(converted)) and same_model(str(converted) + "/", "default")
    assert not same_model(None, str(tmp_path / "other")) and not same_model(None, "org/m")


def test_a_teacher_on_the_embedded_default_loads_it(trained, tiny_model_dir, tmp_path, monkeypatch):
    """A run on the embedded default (model.name null, as `make demo`'s) leaves a teacher whose start model is
    None, not the string 'None' (which was looked up on the hub): Teacher.load loads the embedded default, and
    takes the default model already loaded (`loaded=(None, ...)`) instead of a second copy."""
    import llmgan.models as models

    disc, folder = trained
    cfg = load_config(folder / "config.yaml")
    cfg.model.name = None
    saved = save_teacher(cfg, disc, tmp_path / "teacher")
    assert json.loads((saved / "teacher.json").read_text())["start_model"] is None
    asked = []
    real_model, real_tok = models.load_model, models.load_tokenizer
    monkeypatch.setattr(models, "load_model", lambda name, **kw: asked.append(name) or real_model(str(tiny_model_dir)))
    monkeypatch.setattr(models, "load_tokenizer", lambda name, **kw: real_tok(str(tiny_model_dir)))
    prompts, texts = [conv(p) for p in POSTS], FAKES[:2] + REALS[2:]
    expected = score_completions(disc, prompts, texts)
    assert torch.allclose(Teacher.load(saved).logits(prompts, texts), expected, atol=1e-5) and asked == [None]
    loaded = (None, real_model(str(tiny_model_dir)), real_tok(str(tiny_model_dir)))
    assert torch.allclose(Teacher.load(saved, loaded=loaded).logits(prompts, texts), expected, atol=1e-5)
    assert asked == [None]  # the loaded default was used
