"""Training: `llmgan train` (adversarial, GRPO + discriminator reward), `llmgan sft`, the embedding
baseline, and `llmgan select`. Imports llmgan.adversarial, models, data, io, config, errors, generator;
only the command line (llmgan.cli) and demo.py import this package."""
