"""One rank of the 2-process test (tests/test_distributed.py); run it under torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py \
        --model TINY_MODEL_DIR --data PREPARED_DATA --out OUT

It builds the adversarial trainer exactly as `llmgan train` does (llmgan.training.components.build_components,
then llmgan.training.stages.warmup_discriminator), trains `--steps` generator steps under accelerate's
multi-CPU (gloo) DDP, and writes OUT/rank{R}.json with fingerprints of what each rank ends with:
the discriminator's weights and optimizer state, the generator's trainable (LoRA) and full weights,
the prompts each rank saw, its discriminator metrics, and two extra checks:

- the 'reference' encoder built on the DDP-wrapped model (`trainer.model_wrapped`) gives the same
  features as the one built on the bare peft model (`unwrap_model` strips DDP);
- a control: two fresh discriminators updated on each rank's *own* samples, one with the gradient
  all-reduce and one without; only the first may stay identical across ranks.

The final save of `llmgan train` is not used (it writes the run folder on every rank); the
fingerprints are taken from the live objects on each rank.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def digest(named) -> str:
    """sha256 over (name, dtype, shape, bytes) of tensors, sorted by name (bit-exact fingerprint)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda x: x[0]):
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def optimizer_digest(opt) -> str:
    state = opt.state_dict()["state"]
    return digest([(f"{i}.{k}", v) for i, s in state.items() for k, v in s.items()])


def text_digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = p.parse_args()

    import torch
    from transformers import TrainerCallback

    from llmgan.config import load_config
    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.models import unwrap_model
    from llmgan.adversarial.reward import DiscriminatorReward
    from llmgan.training.components import build_components
    from llmgan.training.stages import warmup_discriminator

    rank = int(os.environ["RANK"])
    out = Path(args.out)
    cfg = load_config(None, [
        f"model.name={args.model}", f"data.path={args.data}", f"train.output_dir={out / 'run'}",
        f"train.steps={args.steps}", "train.save_every=1000", "train.sample_every=0", "train.prompts_per_step=2",
        "train.lr=1e-2", "data.max_prompt_tokens=32", "generation.num_generations=2", "generation.max_new_tokens=6",
        "discriminator.hidden_layer=1", "discriminator.condition_on_prompt=true", "discriminator.encoder=reference",
        "discriminator.width=32", "discriminator.heads=2", "discriminator.layers=1", "discriminator.warmup_steps=1",
        "discriminator.max_response_tokens=16", "discriminator.replay_size=8", *args.set])

    # as `llmgan train` builds it
    seen: list[dict] = []
    live: dict = {}

    class Record(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            samples = getattr(live["trainer"], "last_samples", [])
            seen.append({"step": state.global_step, "prompts": text_digest(sorted({s["prompt"] for s in samples})),
                         "completions": text_digest([s["generated"] for s in samples]), "n": len(samples),
                         "metrics": {k: v for k, v in live["disc"].metrics.items() if k.startswith("discriminator/")}})

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        parts = build_components(cfg, out / "run", callbacks=[Record()], args_overrides={"save_strategy": "no"},
                                 quiet=True)
    trainer, model, tok, train_rows, encoder, disc = (parts.trainer, parts.policy, parts.tokenizer, parts.train_rows,
                                                      parts.encoder, parts.discriminator)
    live.update(trainer=trainer, disc=disc)
    d_init = digest(disc.model.state_dict().items())
    dist = torch.distributed
    info = {"rank": rank, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "distributed_type": str(trainer.accelerator.distributed_type), "process_index": trainer.accelerator.process_index}
    warmup_discriminator(cfg, model, tok, train_rows, disc, progress=False)
    d_after_warmup = digest(disc.model.state_dict().items())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        trainer.train()

    trainable = [(n, p) for n, p in unwrap_model(trainer.model_wrapped).named_parameters() if p.requires_grad]
    lora_b_abs = float(sum(p.detach().abs().sum() for n, p in trainable if "lora_B" in n))

    # the reference encoder through the DDP wrapper == the one on the bare peft model
    wrapped = trainer.model_wrapped
    kw = dict(layer=cfg.discriminator.hidden_layer, condition_on_prompt=True, max_response_tokens=16, max_prompt_tokens=32,
              disable_adapters=True)
    prompts = [[{"role": "user", "content": "a post about the weather"}], [{"role": "user", "content": "another post"}]]
    texts = ["a reply", "a somewhat longer reply to the post"]
    h_wrapped, m_wrapped = HiddenStateEncoder(wrapped, tok, **kw).encode(prompts, texts)
    h_bare, m_bare = HiddenStateEncoder(unwrap_model(wrapped), tok, **kw).encode(prompts, texts)
    encoder_check = {"wrapper": type(wrapped).__name__, "unwrapped": type(unwrap_model(wrapped)).__name__,
                     "equal": bool(torch.equal(h_wrapped, h_bare) and torch.equal(m_wrapped, m_bare))}

    # control: rank-local samples, with and without the gradient all-reduce
    local = trainer.last_samples
    l_prompts = [[{"role": "user", "content": s["prompt"]}] for s in local]
    l_fakes = [s["generated"] for s in local]
    l_reals = [s["real"] for s in local]
    control = {}
    for name, sync in (("synced", True), ("unsynced", False)):
        d = DiscriminatorReward(cfg.discriminator, cfg.reward, encoder, seed=123)
        if not sync:
            d._sync_gradients = lambda: None
        d.train_step(prompts=l_prompts, completions=l_fakes, response=l_reals, steps=2)
        control[name] = digest(d.model.state_dict().items())

    result = {**info, "steps": trainer.state.global_step, "seen": seen,
              "local_samples": text_digest([[s["prompt"], s["generated"]] for s in local]),
              "d_init": d_init, "d_after_warmup": d_after_warmup, "d_final": digest(disc.model.state_dict().items()),
              "d_optimizer": optimizer_digest(disc.optimizer), "d_updates": disc.updates, "d_calls": disc.calls,
              "d_metrics": disc.metrics, "generator_trainable": digest(trainable),
              "generator_all": digest(unwrap_model(trainer.model_wrapped).state_dict().items()),
              "generator_optimizer": optimizer_digest(trainer.optimizer), "lora_b_abs_sum": lora_b_abs,
              "n_trainable": len(trainable), "encoder_check": encoder_check, "control": control}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main()
