"""How a discriminator trainer (`d_trainer.DiscriminatorTrainer`) is written to a folder and read back.

Only safetensors and JSON: D's weights (`discriminator.safetensors`; for an architecture with
`trainable_only_in_checkpoints` the trainable tensors only), its optimizer tensors and RNG states
(`discriminator_optimizer.safetensors`), the frozen encoder's cached replay features
(`replay_features.safetensors`, optional) and the rest (`discriminator_state.json`). Nothing in a
checkpoint is unpickled when it is read back (a legacy `discriminator_optimizer.pt` is read with
`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from llmgan.errors import LlmganError
from llmgan.io import flatten_optimizer_state, unflatten_optimizer_state

WEIGHTS_FILE = "discriminator.safetensors"
STATE_FILE = "discriminator_state.json"
OPTIMIZER_FILE = "discriminator_optimizer.safetensors"
REPLAY_FEATURES_FILE = "replay_features.safetensors"  # optional: written when features are cached
LEGACY_OPTIMIZER_FILE = "discriminator_optimizer.pt"  # read (weights_only) if a checkpoint predates the safetensors file


def save(trainer: Any, directory: str | Path) -> None:
    """Write D's weights, optimizer tensors and RNG states (safetensors) and the rest (JSON) to `directory`.

    Only safetensors and JSON: nothing in a checkpoint is unpickled when it is read back.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = trainer.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in state["model"].items()},
              str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    replay = state["replay"]
    tensors, optimizer_meta = flatten_optimizer_state(state["optimizer"])
    tensors["rng.generator"] = state["generator"]
    tensors["rng.replay_generator"] = replay.pop("generator")
    save_file(tensors, str(directory / OPTIMIZER_FILE), metadata={"format": "pt"})
    # The frozen encoder's cached replay features, so a resumed run replays bit-identical features.
    # (cloned: items of one prompt group share their real's tensor, and safetensors refuses shared memory)
    cached = {f"{i}.{kind}": t.detach().cpu().clone() for i, f in enumerate(trainer.replay.features) if f
              for kind, t in f.items()}
    if cached:
        save_file(cached, str(directory / REPLAY_FEATURES_FILE), metadata={"format": "pt"})
    meta = {"format": 2, "input_size": trainer.encoder.hidden_size, "updates": state["updates"],
            "calls": state["calls"], "watcher": state["watcher"], "replay": replay, "optimizer": optimizer_meta,
            "lengths": state["lengths"],
            "discriminator": dataclasses.asdict(trainer.settings) if dataclasses.is_dataclass(trainer.settings) else None,
            "reward": dataclasses.asdict(trainer.reward_settings) if dataclasses.is_dataclass(trainer.reward_settings) else None}
    (directory / STATE_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1))


def load(trainer: Any, directory: str | Path) -> None:
    """Restore what `save` wrote (the discriminator architecture must match the current settings)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    optimizer_file = OPTIMIZER_FILE
    if not (directory / optimizer_file).is_file() and (directory / LEGACY_OPTIMIZER_FILE).is_file():
        optimizer_file = LEGACY_OPTIMIZER_FILE
    missing = [f for f in (WEIGHTS_FILE, STATE_FILE, optimizer_file) if not (directory / f).is_file()]
    if missing:
        raise LlmganError(f"discriminator checkpoint in {directory} is incomplete: missing {', '.join(missing)}")
    meta = json.loads((directory / STATE_FILE).read_text())
    if optimizer_file == LEGACY_OPTIMIZER_FILE:
        other = torch.load(directory / optimizer_file, map_location="cpu", weights_only=True)
    else:
        tensors = load_file(str(directory / optimizer_file), device="cpu")
        other = {"optimizer": unflatten_optimizer_state(tensors, meta["optimizer"]),
                 "generator": tensors["rng.generator"], "replay_generator": tensors["rng.replay_generator"]}
    weights = load_file(str(directory / WEIGHTS_FILE), device=str(trainer.device))
    replay = dict(meta["replay"], generator=other["replay_generator"])
    try:
        trainer.load_state_dict({"model": weights, "optimizer": other["optimizer"], "replay": replay,
                              "generator": other["generator"], "updates": meta["updates"],
                              "calls": meta["calls"], "watcher": meta["watcher"], "lengths": meta.get("lengths")})
    except (RuntimeError, ValueError, KeyError) as exc:
        raise LlmganError(f"discriminator checkpoint in {directory} does not fit the current discriminator "
                          f"settings (layers/width/heads/pooling/lstm/encoder): {str(exc).splitlines()[0]}") from None
    features_file = directory / REPLAY_FEATURES_FILE
    if trainer.cache_features and features_file.is_file():
        cached = load_file(str(features_file), device=str(trainer.device))
        for key, tensor in cached.items():
            index, kind = key.split(".", 1)
            i = int(index)
            fits = tensor.ndim == 1 if tensor.dtype == torch.long else \
                (tensor.ndim == 2 and tensor.shape[1] == trainer.encoder.hidden_size)  # token ids or states
            if 0 <= i < len(trainer.replay.features) and fits:
                trainer.replay.features[i] = {**(trainer.replay.features[i] or {}), kind: tensor}
