"""Putting the adversarial trainer together, in one place: policy -> data -> encoder -> discriminator
-> trainer. `llmgan train`, tests/dist_worker.py and bench/bench_step.py all build it here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from llmgan.config import RunConfig


@dataclass
class Components:
    """What one adversarial run trains with."""

    tokenizer: Any
    policy: Any               # the generator (peft LoRA model unless model.lora.enabled is false)
    train_rows: Any           # datasets.Dataset: prompt (messages, cut), response
    eval_rows: Any            # the split for sample generations
    encoder: Any              # adversarial.features.HiddenStateEncoder (None without a discriminator)
    discriminator: Any        # adversarial.reward.DiscriminatorReward (None without one)
    trainer: Any              # training.trainer.AdversarialGRPOTrainer


def build_components(cfg: RunConfig, run_dir: str | Path, *, device: Any = None, callbacks: Sequence[Any] = (),
                     reward_funcs: Optional[list] = None, args_overrides: Optional[dict] = None,
                     quiet: bool = False) -> Components:
    """Seed, load the policy and the training split, check the context length, build the encoder, the
    discriminator and the GRPO trainer (its PrinterCallback removed: llmgan's RunLogger prints).

    device: where D (and a separate encoder model) live; default the encoder's device. reward_funcs: TRL
    reward functions instead of the discriminator (no encoder, no D: a benchmark's baseline).
    args_overrides: GRPOConfig fields to set after `grpo_args` (e.g. save_strategy='no'). quiet: no library
    progress bars or FutureWarnings while loading.
    """
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from llmgan.adversarial.discriminators import reads_tokens
    from llmgan.adversarial.features import HiddenStateEncoder, TokenEncoder
    from llmgan.adversarial.reward import DiscriminatorReward
    from llmgan.models import build_policy, check_context_length, quiet_libraries
    from llmgan.training.dataset import load_train_dataset
    from llmgan.training.trainer import AdversarialGRPOTrainer, grpo_args

    set_seed(cfg.train.seed)
    with quiet_libraries(quiet):
        tok, model = build_policy(cfg)
        train_rows, eval_rows = load_train_dataset(cfg, tok)
        check_context_length(model, tok, [list(m) for m in train_rows["prompt"]], cfg.data.max_prompt_tokens,
                             cfg.generation.max_new_tokens)
        encoder = disc = None
        if reward_funcs is None:
            # the encoder reads hidden states; 'reference' = the policy with adapters disabled (a frozen copy
            # of the start model for full fine-tuning). D lives on `device` (the trainer moves the policy
            # there below; a separate encoder model is placed there now). A token-reading D (architecture=lm)
            # gets token ids and trains its own copy of the start model (model.name).
            encoder_cls = TokenEncoder if reads_tokens(cfg.discriminator) else HiddenStateEncoder
            encoder = encoder_cls.from_settings(cfg.discriminator, policy=model, tokenizer=tok, model_name=cfg.model.name,
                                                dtype=cfg.model.dtype, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                                trust_remote_code=cfg.model.trust_remote_code, device=device)
            disc = DiscriminatorReward(cfg.discriminator, cfg.reward, encoder, seed=cfg.train.seed, device=device)
            reward_funcs = [disc]
        args = grpo_args(cfg, Path(run_dir))
        for key, value in (args_overrides or {}).items():
            setattr(args, key, value)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*loss_type.*")
            trainer = AdversarialGRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_rows,
                                             processing_class=tok, callbacks=list(callbacks), discriminator=disc,
                                             keep_checkpoints=cfg.train.keep_checkpoints,
                                             max_consecutive_faults=cfg.train.max_consecutive_faults)
    if disc is not None:
        disc.accelerator = trainer.accelerator
    trainer.remove_callback(PrinterCallback)
    return Components(tok, model, train_rows, eval_rows, encoder, disc, trainer)
