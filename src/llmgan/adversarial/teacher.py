"""The warmed-up discriminator as a reranker: RUN/teacher/, written at the end of the warm-up, and read back by
`llmgan generate --best-of N --teacher RUN/teacher` to keep, of N samples per prompt, the one it scores most
human (RESULTS.md, "Reranking with the teacher, shipped": on held-out replies best of 4 under each of three
seeds' teachers beats the SFT model they rank, where the adversarial game tied it).

The folder holds D's weights (safetensors; no optimizer or replay state), the run's resolved config at the
end of the warm-up (`config.yaml`: model.name is the start model whose states D reads, the caps are the
run's) and `teacher.json` (its held-out AUROC and the judge's on the same texts, when measured).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from llmgan.errors import LlmganError

TEACHER_DIR = "teacher"          # RUN/teacher/
CONFIG_FILE = "config.yaml"      # the run config at the end of the warm-up
SUMMARY_FILE = "teacher.json"    # start model, warm-up steps, held-out AUROCs
WEIGHTS_FILE = "discriminator.safetensors"  # D's weights (all, or the trainable part of an `lm` D)


def save_teacher(cfg: Any, discriminator: Any, folder: str | Path, summary: Optional[dict] = None) -> Path:
    """Write D's weights (safetensors), the config it was warmed up under and a summary to `folder` (e.g.
    RUN/teacher); returns it. Only what scoring needs: no optimizer or replay state (a checkpoint-N/discriminator
    folder has those, for resuming the game)."""
    import os

    import yaml
    from safetensors.torch import save_file

    from llmgan.config import config_to_dict
    from llmgan.io import write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in discriminator.state_dict()["model"].items()}
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_file(weights, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / WEIGHTS_FILE)
    write_atomic(folder / CONFIG_FILE, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    name = model_name(cfg.model.name)  # None: the embedded default
    where = ({"start_model_path": str(Path(name).expanduser().resolve())}
             if name is not None and Path(name).expanduser().exists() else {})
    write_atomic(folder / SUMMARY_FILE, json.dumps({"start_model": name, **where, **(summary or {})}, indent=1))
    return folder


def model_name(name: Optional[str]) -> Optional[str]:
    """A model name as config and CLI give it, with the embedded default (null, '' or 'default') as None."""
    from llmgan.models import is_default_model

    return None if is_default_model(name) else str(name)


def start_model(folder: Path, cfg: Any) -> Optional[str]:
    """The model whose states D reads: config.yaml's model.name (None for the embedded default), or, when that is
    a relative path that does not resolve from here (a run started in another directory), the absolute path
    teacher.json recorded."""
    name = model_name(cfg.model.name)
    if name is None or Path(name).expanduser().exists() or not (folder / SUMMARY_FILE).is_file():
        return name
    recorded = json.loads((folder / SUMMARY_FILE).read_text()).get("start_model_path")
    if recorded and Path(recorded).exists():
        return recorded
    if recorded:  # a local folder that is gone (not a hub id, which is never recorded)
        raise LlmganError(f"--teacher {folder}: its start model {name} ({recorded}) is not found; D reads that "
                          f"model's hidden states, so it must be present (set model.name in {folder / CONFIG_FILE})")
    return name


def check_teacher(folder: str | Path) -> Path:
    """`folder` as a Path when it holds a saved teacher; else an error naming the folder and the missing file."""
    folder = Path(folder)
    hint = f"a run writes RUN/{TEACHER_DIR}/ at the end of its discriminator warm-up"
    if not folder.is_dir():
        raise LlmganError(f"--teacher {folder}: no such folder ({hint})")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise LlmganError(f"--teacher {folder}: missing {name}, so this is not a teacher folder ({hint})")
    return folder


def check_best_of(n: int, teacher: Optional[str | Sequence[str]]) -> None:
    """--best-of N / --teacher of `llmgan generate` and `llmgan serve` go together: N > 1 needs a teacher (one
    folder, or several) and a teacher needs N > 1 (each folder itself: `check_teacher`)."""
    if n < 1 or (n > 1) != bool(teacher):
        shown = teacher if isinstance(teacher, (str, Path)) or not teacher else " ".join(map(str, teacher))
        raise LlmganError(f"--best-of {n}" + (f" with --teacher {shown}" if teacher else "")
                          + ": --best-of N > 1 needs --teacher RUN/teacher (the discriminator that ranks the draws), "
                            "and --teacher needs --best-of N > 1")


def sampling_differences(cfg: Any, temperature: float, top_p: float, max_new_tokens: Optional[int] = None,
                         end_ramp: Optional[int] = None) -> list[str]:
    """How draws sampled with these settings differ from the start-model samples a teacher was warmed up on
    (`cfg`: its config.yaml; the warm-up pool was sampled with its generation section, at
    discriminator.warmup_pool_temperatures where set, the cap the run's); [] when they do not. max_new_tokens
    None: the cap is not compared (a server's max_tokens is the client's). A teacher warmed up on a pool at
    several temperatures takes any temperature from their lowest to their highest.

    A teacher ranks well only the kind of samples it learned from (RESULTS.md, thirty-first session, post
    validation): warmed up at temperature 1.0 and given drafts at 0.92 alone, its pick was no harder to detect
    than an unranked draft; given drafts at 1.0 and 0.92 together, it took most picks from the 0.92 drafts.
    A teacher warmed up on a pool at 0.7, 0.85 and 1.0 tied the matched teacher on drafts at 1.0 and at 0.92
    (thirty-second session)."""
    g = cfg.generation
    temps = [float(t) for t in (cfg.discriminator.warmup_pool_temperatures or [g.temperature])]
    lo, hi = min(temps), max(temps)
    diffs = []
    if not lo - 1e-9 <= float(temperature) <= hi + 1e-9:
        seen = f"{lo:g}" if lo == hi else f"{lo:g} to {hi:g}"
        diffs.append(f"temperature {temperature:g} (the teacher's samples: {seen})")
    if abs(float(top_p) - float(g.top_p)) > 1e-9:
        diffs.append(f"top-p {top_p:g} (the teacher's samples: {g.top_p:g})")
    if max_new_tokens is not None and int(max_new_tokens) != int(g.max_new_tokens):
        diffs.append(f"at most {max_new_tokens} new tokens (the teacher's samples: {g.max_new_tokens})")
    if end_ramp is not None:
        diffs.append("an end-of-text ramp (the teacher's samples had none)")
    return diffs


def same_model(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two model names or paths name the same model (equal, or folders that resolve to one; None, '' and
    'default' all name the embedded default, which is also its converted folder in $LLMGAN_CACHE)."""
    from llmgan.models import default_model_dir

    a, b = model_name(a), model_name(b)
    if a == b:
        return True
    pa, pb = (default_model_dir() if x is None else Path(x).expanduser() for x in (a, b))
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


class Teacher:
    """A saved teacher, loaded to score completions: `Teacher.load(RUN/teacher).logits(prompts, texts)`."""

    def __init__(self, discriminator: Any, cfg: Any, folder: Path, loaded: Optional[tuple] = None):
        self.discriminator, self.cfg, self.folder = discriminator, cfg, folder
        self.loaded = loaded  # (start model name, model, tokenizer) as `load` had them: another load may share them

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", dtype: Optional[str] = None,
             loaded: Optional[tuple[Optional[str], Any, Any]] = None) -> "Teacher":
        """Read RUN/teacher: the start model (model.name of its config.yaml) is loaded frozen as D's encoder, D's
        weights read back. Errors name the folder and the missing file before any model loads.

        loaded: (name, model, tokenizer) already in memory (e.g. `llmgan generate`'s generator, loaded with
        `dtype` on `device`); used instead of a second copy when `name` is the start model."""
        from safetensors.torch import load_file

        from llmgan.adversarial.discriminators import reads_tokens
        from llmgan.adversarial.features import HiddenStateEncoder, TokenEncoder
        from llmgan.adversarial.reward import DiscriminatorReward
        from llmgan.config import load_config
        from llmgan.models import load_model, load_tokenizer

        folder = check_teacher(folder)
        cfg = load_config(folder / CONFIG_FILE)
        dtype = dtype or cfg.model.dtype
        cfg.model.name = start_model(folder, cfg)
        if loaded is not None and same_model(loaded[0], cfg.model.name):
            model, tok = loaded[1], loaded[2]
        else:
            tok = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
            model = load_model(cfg.model.name, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code).to(device)
        model.eval().requires_grad_(False)
        encoder_cls = TokenEncoder if reads_tokens(cfg.discriminator) else HiddenStateEncoder
        # discriminator.encoder 'reference' or 'policy': at the end of the warm-up both are the start model, loaded
        # here as a plain frozen model (reference_model); a named encoder model is loaded by from_settings
        encoder = encoder_cls.from_settings(cfg.discriminator, policy=model, tokenizer=tok, reference_model=model,
                                            model_name=cfg.model.name, dtype=dtype,
                                            max_prompt_tokens=cfg.data.max_prompt_tokens,
                                            trust_remote_code=cfg.model.trust_remote_code, device=device)
        disc = DiscriminatorReward(cfg.discriminator, cfg.reward, encoder, seed=cfg.train.seed, device=device)
        weights = load_file(str(folder / WEIGHTS_FILE), device=str(disc.device))
        expected = set(disc.state_dict()["model"])  # all of D, or the trainable part of an `lm` D
        try:
            if set(weights) != expected:
                raise RuntimeError(f"{len(weights)} tensors where it has {len(expected)}")
            disc.model.load_state_dict(weights, strict=not getattr(disc.model, "trainable_only_in_checkpoints", False))
        except RuntimeError as exc:
            raise LlmganError(f"--teacher {folder}: {WEIGHTS_FILE} does not fit the discriminator its {CONFIG_FILE} "
                              f"describes ({str(exc).splitlines()[0][:200]})") from None
        return cls(disc, cfg, folder, loaded=(cfg.model.name, model, tok))

    def logits(self, prompts: Sequence[Any], completions: Sequence[Any],
               cut: Optional[Sequence[Optional[bool]]] = None) -> torch.Tensor:
        """prompts [M] (conversations), completions [M], cut [M] (optional: which stopped at the generation cap,
        read by a teacher with discriminator.mark_end) -> D's logits [M] (higher = more human)."""
        return score_completions(self.discriminator, prompts, completions, cut=cut)

    @staticmethod
    def logits_of(teachers: Sequence["Teacher"], prompts: Sequence[Any], completions: Sequence[Any],
                  cut: Optional[Sequence[Optional[bool]]] = None) -> torch.Tensor:
        """Several teachers on the same texts -> logits [T, M]; teachers loaded on one start model (`load`'s
        `loaded`) encode each text once between them (`score_with_many`)."""
        return score_with_many([t.discriminator for t in teachers], prompts, completions, cut=cut)


class TeacherMean:
    """Several saved teachers ranking as one: a draw's logit is the mean of theirs (no weights), so `best_of` keeps
    the draw they rank highest together. Teachers warmed up from one start model read one copy of it and encode
    each text once (`score_with_many`); with one teacher the logits are that teacher's. `cfg` and `folder` are the
    first teacher's (how the draws should be sampled: `sampling_differences`).

    Experimental, not the shipped recipe (RESULTS.md, fortieth session): on reply validation the mean of the three
    reply teachers' logits cleared the drafts in 3 of 3 draw sets (single teachers in 8 of 9 cells), but on the reply
    test split in 2 of 3, as teacher 0 alone did (teacher 1 alone: 3 of 3); its mean gain, -0.065, ties the better
    single teachers'. It costs a warm-up per teacher."""

    def __init__(self, teachers: Sequence[Teacher]):
        if not teachers:
            raise ValueError("need at least one teacher")
        self.teachers = list(teachers)
        self.cfg, self.folder = self.teachers[0].cfg, self.teachers[0].folder

    @classmethod
    def load(cls, folders: Sequence[str | Path], device: str = "cpu", dtype: Optional[str] = None,
             loaded: Optional[tuple[Optional[str], Any, Any]] = None) -> "TeacherMean":
        """`Teacher.load` for each folder (`loaded`: as there). Teachers on one start model share one copy of it:
        the one given, or else the first such teacher's."""
        teachers: list[Teacher] = []
        for folder in folders:
            teachers.append(Teacher.load(folder, device=device, dtype=dtype, loaded=loaded))
            if loaded is None or not same_model(loaded[0], teachers[-1].cfg.model.name):
                loaded = teachers[-1].loaded
        return cls(teachers)

    def logits(self, prompts: Sequence[Any], completions: Sequence[Any],
               cut: Optional[Sequence[Optional[bool]]] = None) -> torch.Tensor:
        """prompts [M], completions [M], cut [M] (optional, as `Teacher.logits`) -> the teachers' mean logit [M]."""
        return Teacher.logits_of(self.teachers, prompts, completions, cut=cut).mean(dim=0)


def score_completions(discriminator: Any, prompts: Sequence[Any], completions: Sequence[Any],
                      chunk: int = 32, cut: Optional[Sequence[Optional[bool]]] = None) -> torch.Tensor:
    """A DiscriminatorTrainer in eval mode on completions alone, no real replies needed: prompts [M], completions
    [M] -> logits [M] (higher = more human), the fake logits its `score` gives the same texts in a training batch
    (each row is read on its own, under its mask), `chunk` completions per encode. Not counted as a scored batch."""
    return score_with_many([discriminator], prompts, completions, chunk, cut)[0]


def encoder_key(encoder: Any) -> tuple:
    """What an encoder's output depends on: discriminators whose encoders agree on all of it read the same
    states (the same model object and tokenizer, layer, prompt conditioning, token caps, adapters on or off)."""
    return (type(encoder), id(encoder.model), id(encoder.tokenizer), getattr(encoder, "layer", None),
            encoder.condition_on_prompt, encoder.max_response_tokens, encoder.max_prompt_tokens,
            getattr(encoder, "disable_adapters", False), getattr(encoder, "anchor_id", None),
            getattr(encoder, "pad_id", None), getattr(encoder, "end_id", None))


def score_with_many(discriminators: Sequence[Any], prompts: Sequence[Any], completions: Sequence[Any],
                    chunk: int = 32, cut: Optional[Sequence[Optional[bool]]] = None) -> torch.Tensor:
    """`score_completions` for several discriminators: prompts [M], completions [M] (cut [M]: which stopped at the
    generation cap, or None) -> logits [D, M]. Those whose encoders share a key (`encoder_key`: e.g. teachers warmed
    up from one start model, loaded once) encode each chunk once and each reads the same states, so D teachers cost
    about one encoder pass, not D."""
    if cut is not None and len(cut) != len(completions):
        raise ValueError(f"one cut flag per completion is needed (got {len(cut)} for {len(completions)})")
    from llmgan.adversarial.features import as_text

    groups: dict[tuple, list[int]] = {}
    for j, d in enumerate(discriminators):
        groups.setdefault(encoder_key(d.encoder) if len(discriminators) > 1 else (), []).append(j)
        d.model.eval()
    out: list[list[torch.Tensor]] = [[] for _ in discriminators]
    with torch.no_grad():
        for s in range(0, len(completions), chunk):
            texts = [as_text(c) for c in completions[s:s + chunk]]
            for members in groups.values():
                enc = discriminators[members[0]].encoder
                h, m = enc.encode(list(prompts[s:s + chunk]) if enc.condition_on_prompt else None, texts,
                                  cut=None if cut is None else list(cut[s:s + chunk]))
                for j in members:
                    d = discriminators[j]
                    out[j].append(d.model(h.to(d.device), m.to(d.device)).float().reshape(-1).cpu())
    return torch.stack([torch.cat(o) if o else torch.zeros(0) for o in out])


def best_of(logits: torch.Tensor) -> torch.Tensor:
    """logits [N, M] of N draws for M prompts -> index [M] of the draw with the highest logit (the first on ties)."""
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"need logits of shape [N draws, M prompts], got {tuple(logits.shape)}")
    return logits.argmax(dim=0)


def soft_best_of(logits: torch.Tensor, temperature: float = 1.0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits [N, M] of N draws for M prompts -> index [M]: per prompt, draw i kept with probability
    softmax(logits[:, m] / temperature)[i] (sampling-importance-resampling; "soft best-of-n", arXiv 2505.03156).

    A teacher trained with the logistic loss on balanced real / generated texts estimates logit ~ log p_human(x) /
    p_gen(x), so at temperature 1 the kept draw's law tends to p_human as N grows, where `best_of` (the limit
    temperature -> 0) tends to the teacher's mode. Experimental (thirty-ninth session); `best_of` is what ships."""
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"need logits of shape [N draws, M prompts], got {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"the temperature must be above 0, got {temperature}")
    probs = torch.softmax(logits.double().T / temperature, dim=1)  # [M, N]
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
