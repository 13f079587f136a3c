"""Taking a trained agent into a simulation: `llmgan export` (a self-contained Hugging Face folder) and
`llmgan serve` (an OpenAI-compatible endpoint on an existing engine: `transformers serve` on CPU, vLLM's
OpenAI server on CUDA). See docs/serving.md."""
