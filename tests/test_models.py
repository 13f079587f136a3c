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


def test_adapter_trained_on_an_adapter_folder_keeps_both(tiny_model_dir, tmp_path):
    """An adapter trained on a model loaded from an adapter folder (SFT, then adversarial training) records
    that folder as its base, so loading it applies both adapters, not only the second on the raw base."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llmgan.models import adapter_base, load_model

    def lora(model, seed):
        torch.manual_seed(seed)
        return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))

    first = lora(load_model(str(tiny_model_dir)), 0)
    first.save_pretrained(tmp_path / "sft")
    second = lora(load_model(str(tmp_path / "sft")), 1)
    second.save_pretrained(tmp_path / "adv")
    assert adapter_base(str(tmp_path / "adv")) == str((tmp_path / "sft").resolve())
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        expected = second.eval()(input_ids=ids).logits
        got = load_model(str(tmp_path / "adv"))(input_ids=ids).logits
        only_second = lora(load_model(str(tiny_model_dir)), 1).eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, only_second)
