"""llmgan: make an instruction-tuned LLM write text people cannot tell from real human text.

The generator (a causal LM) is trained against a discriminator that reads its hidden states;
the discriminator's score on synthetic responses is the generator's reward (policy gradient
with a KL leash to the starting model). See README.md for the method and the commands.
"""

__version__ = "0.1.0"

from llmgan.errors import LlmganError  # noqa: E402

__all__ = ["LlmganError", "__version__"]
