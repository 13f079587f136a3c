import pytest
import torch

from llmgan.errors import LlmganError
from llmgan.models import apply_chat, load_model, load_tokenizer, resolve_model_path


def test_tiny_model_loads_and_chat_template(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    assert tok.padding_side == "left" and tok.pad_token is not None
    text = apply_chat(tok, [[{"role": "system", "content": "S"}, {"role": "user", "content": "hello"}]])[0]
    assert "hello" in text and text.rstrip().endswith("assistant")
    assert model.config.num_hidden_layers == 2


def test_not_a_model_folder(tmp_path):
    with pytest.raises(LlmganError, match="not a model folder"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(LlmganError, match="does not exist"):
        resolve_model_path("./no/such/folder")


@pytest.mark.slow
def test_default_model_converted_matches_gguf(default_model_dir):
    """The safetensors conversion gives exactly the GGUF model's logits."""
    from transformers import AutoModelForCausalLM

    from llmgan.models import default_gguf_path

    gguf = default_gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    model = load_model(None)
    tok = load_tokenizer(None)
    ids = tok(["Biden's war on Christianity needs to END!!"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(ref(**ids).logits, model(**ids).logits)
    assert (default_model_dir / "model.safetensors").is_file()
