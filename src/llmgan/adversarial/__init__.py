"""The adversarial part: what encodes texts (features), the discriminator architectures and losses
(registries), the discriminator's trainer, and the reward shapes (registry).

Imports only llmgan.models, llmgan.io, llmgan.errors (and llmgan.config); never llmgan.training.
"""

from __future__ import annotations


def registered_names() -> dict[str, list[str]]:
    """The names config validation accepts: discriminator.architecture, discriminator.loss, reward.kind."""
    from llmgan.adversarial.discriminators import ARCHITECTURES
    from llmgan.adversarial.losses import LOSSES
    from llmgan.adversarial.reward import REWARD_SHAPES

    return {"discriminator.architecture": list(ARCHITECTURES), "discriminator.loss": list(LOSSES),
            "reward.kind": list(REWARD_SHAPES)}
