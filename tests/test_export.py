"""llmgan export: a run's merged model as a self-contained folder that plain transformers loads.

The run folder is built here without training (a tiny random Llama with a random, non-zero LoRA adapter as
selected/ and final/ generator, a config.yaml, metrics.jsonl and selection.json), so the test takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmgan.errors import LlmganError

SELECTED_T, SELECTED_P, SELECTED_CAP = 0.9, 0.95, 37


def make_fake_run(run: Path, tiny_model_dir: Path, data_dir: Path, *, selected: bool = True) -> Path:
    """A run folder as `llmgan train` + `llmgan select` leave it, with random LoRA weights."""
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmgan.config import RunConfig, config_to_dict

    cfg = RunConfig()
    cfg.model.name, cfg.data.path, cfg.train.output_dir = str(tiny_model_dir), str(data_dir), str(run)
    cfg.selection.temperature = 0.8  # used when there is no selection.json
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False))
    peft_model.save_pretrained(run / "final" / "generator")
    if selected:
        peft_model.save_pretrained(run / "selected" / "generator")
        (run / "selection").mkdir()
        (run / "selection" / "selection.json").write_text(json.dumps({
            "selected": {"step": 2, "label": "checkpoint-2"}, "criterion": "lowest detector_auroc",
            "settings": {"split": "validation", "temperature": SELECTED_T, "top_p": SELECTED_P,
                         "max_new_tokens": SELECTED_CAP}}))
    return run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, tiny_model_dir, demo_data) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("run") / "run", tiny_model_dir, demo_data)


@pytest.fixture(scope="module")
def exported(fake_run, tmp_path_factory) -> Path:
    from llmgan.serving.export import export

    out = tmp_path_factory.mktemp("export") / "agent"
    export(str(fake_run), out, verbose=False)
    return out


PLAIN_LOAD = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
folder, messages = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
with torch.no_grad():
    logits = model(**ids).logits[0, -1]
gen = GenerationConfig.from_pretrained(folder)
assert not any(m.startswith("llmgan") for m in sys.modules), "llmgan was imported"
print(json.dumps({"logits": logits.tolist(), "text": tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                  "do_sample": gen.do_sample, "temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k,
                  "max_new_tokens": gen.max_new_tokens}))
"""


def test_export_loads_with_plain_transformers_and_matches(exported, fake_run):
    """The folder loads in a process without llmgan; its last-position logits equal the run's selected model's
    as llmgan loads it (adapter merged into its base); sampling and the default system prompt travel with it."""
    import torch

    from llmgan.data import TASKS
    from llmgan.models import load_model, load_tokenizer

    messages = [{"role": "user", "content": "The new bike lanes downtown are great."}]
    proc = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(exported), json.dumps(messages)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    # the run's model through llmgan, prompted with the training data's system prompt explicitly
    system = TASKS["reply"].system_prompt
    tok = load_tokenizer(str(fake_run / "selected" / "generator"))
    model = load_model(str(fake_run / "selected" / "generator"), dtype="float32")
    ids = tok.apply_chat_template([{"role": "system", "content": system}] + messages, add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ours = model(**ids).logits[0, -1]
    theirs = torch.tensor(plain["logits"])
    assert float((ours - theirs).abs().max()) < 1e-5
    # the LoRA was really merged: the base alone gives other logits
    base = load_model(str(Path(json.loads((fake_run / "final/generator/adapter_config.json").read_text())
                                   ["base_model_name_or_path"])), dtype="float32")
    with torch.no_grad():
        assert float((base(**ids).logits[0, -1] - theirs).abs().max()) > 1e-3
    assert f"system\n{system}" in plain["text"]  # the default system prompt is rendered when none is given
    assert (plain["do_sample"], plain["temperature"], plain["top_p"], plain["top_k"]) == (True, SELECTED_T, SELECTED_P, 0)
    assert plain["max_new_tokens"] == SELECTED_CAP  # the cap it was selected at travels with it


def test_export_folder_contents_and_model_card(exported, fake_run, demo_data):
    files = {p.name for p in exported.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md", "llmgan_export.json",
            "tokenizer.json", "chat_template.jinja"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert not list(exported.parent.glob(".agent.tmp-*"))  # the temporary folder is gone
    info = json.loads((exported / "llmgan_export.json").read_text())
    assert info["step"] == 2 and info["merged_lora"] and info["run"] == str(fake_run)
    card = (exported / "README.md").read_text()
    data_card = json.loads((demo_data / "llmgan_card.json").read_text())
    sha = next(iter(data_card["sources"].values()))["sha256"]
    for expected in ["Selected step**: 2", sha, f"{data_card['rows_kept']} kept", "temperature 0.9",
                     "Intended use", "Limits", "convert_hf_to_gguf.py", "objective: policy_gradient",
                     "No evaluation was given or found"]:
        assert expected in card, expected


def test_export_final_generator_and_evaluation_table(tmp_path, tiny_model_dir, demo_data, monkeypatch):
    """Without selected/, final/generator is exported at the run's configured sampling and last logged step;
    an evaluation folder's metrics table goes into the card; the cap is the run's (from the data when it took it
    from there)."""
    from llmgan.config import RunConfig
    from llmgan.serving.export import export

    run = make_fake_run(tmp_path / "run", tiny_model_dir, demo_data, selected=False)
    ev = run / "test.eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"detector_auroc": 0.612}))
    (ev / "report.md").write_text("# llmgan evaluate\n\n## Metrics\n\n| metric | generated | human floor |\n"
                                  "| --- | ---: | ---: |\n| detector AUROC | 0.612 | 0.500 |\n\n## Plots\n")
    info = export(str(run), tmp_path / "out", verbose=False, check=False)
    assert info["step"] == 3 and info["temperature"] == 0.8 and info["top_p"] == 1.0
    assert info["max_new_tokens"] == RunConfig().generation.max_new_tokens  # the run's fixed cap
    (run / "data_caps.json").write_text(json.dumps({"generation.max_new_tokens": 61}))  # caps from the data win
    info = export(str(run), tmp_path / "out", verbose=False, check=False)
    assert info["max_new_tokens"] == 61
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["max_new_tokens"] == 61
    assert "at most 61 new tokens" in (tmp_path / "out" / "README.md").read_text()
    assert info["source"].endswith("final/generator") and info["evaluation"] == str(ev)
    monkeypatch.chdir(tmp_path)  # a relative source is recorded absolute: serve compares it from any directory
    info = export("run", tmp_path / "out", verbose=False, check=False)
    assert info["source"] == str((run / "final" / "generator").resolve())
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| detector AUROC | 0.612 | 0.500 |" in card and "## Plots" not in card


def test_default_system_prompt_template_is_robust(default_model_dir):
    """Quotes, braces, Jinja delimiters and line breaks in the system prompt survive; a given system message wins."""
    from transformers import AutoTokenizer

    from llmgan.serving.export import with_default_system

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    tricky = 'Say "hi" {{ x }} {% if %} %} \\n ü\nnext line \'q\''
    tok.chat_template = with_default_system(tok.chat_template, tricky)
    rendered = tok.apply_chat_template([{"role": "user", "content": "post"}], tokenize=False, add_generation_prompt=True)
    assert rendered.count("<|im_start|>system") == 1 and f"system\n{tricky}<|im_end|>" in rendered
    persona = tok.apply_chat_template([{"role": "system", "content": "Your name is Zorblax."},
                                       {"role": "user", "content": "post"}], tokenize=False)
    assert "Zorblax" in persona and tricky not in persona and "SmolLM" not in persona


def test_export_refuses_bad_input_before_work(tmp_path, fake_run, monkeypatch):
    from llmgan.serving import export as export_mod

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("llmgan.models.load_model", no_load)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LlmganError, match="not an earlier export"):
        export_mod.export(str(fake_run), foreign, verbose=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(LlmganError, match="is a file"):
        export_mod.export(str(fake_run), tmp_path / "file", verbose=False)
    empty_run = tmp_path / "emptyrun"
    empty_run.mkdir()
    (empty_run / "config.yaml").write_text((fake_run / "config.yaml").read_text())
    with pytest.raises(LlmganError, match="neither selected/generator nor final/generator"):
        export_mod.export(str(empty_run), tmp_path / "o1", verbose=False)
    with pytest.raises(LlmganError, match="holds no metrics.json"):
        export_mod.export(str(fake_run), tmp_path / "o2", evaluation=str(tmp_path), verbose=False)
    with pytest.raises(LlmganError, match="does not exist"):
        export_mod.export("./no/such/run", tmp_path / "o3", verbose=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_export_cli_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmgan", "export", str(tmp_path / "missing"), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
