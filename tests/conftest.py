"""Shared fixtures: a tiny random Llama (2 layers, hidden 64) with the default tokenizer, and the TWON data.

The tiny model is built from a config inside the tests (never downloaded); it uses the real
SmolLM2 tokenizer (from the embedded default, converted once into the llmgan cache) so chat
templates and special tokens behave as in real runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TWON_DIR = Path(os.environ.get("LLMGAN_TWON_DIR", REPO.parent / "shared" / "data" / "twon"))
DEMO_FILE = REPO / "data" / "demo" / "twon_demo.jsonl"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from llmgan.models import ensure_default_model

    return ensure_default_model(verbose=False)


def build_tiny_model(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Save a 2-layer, hidden-64 random Llama with the given tokenizer to `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), default_model_dir)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The illustrative demo data prepared as a reply task (train/validation/test grouped by post)."""
    from llmgan.data import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("data") / "demo"
    prepare(PrepareOptions(inputs=[str(DEMO_FILE)], output=str(out), task="reply"))
    return out


@pytest.fixture(scope="session")
def twon_dir() -> Path:
    if not TWON_DIR.is_dir():
        pytest.skip(f"TWON data not found at {TWON_DIR} (set LLMGAN_TWON_DIR or place ../shared/data/twon)")
    return TWON_DIR


@pytest.fixture
def torch_one_thread():
    """Tiny tensors: one torch thread is faster, and 2 threads on a busy 2-core box are up to 50x slower.
    Modules use it with `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
