"""Parameter counts, FLOPs and memory of llmgan's adversarial step for Llama-style models (computed, not measured).

Used by bench/gpu_check.py (the update's model-FLOPs utilisation) and for the memory table of
docs/scaling.md (`python bench/model_math.py` prints it). Architectures are the published configs:

  smollm2-135m  hidden 576,  30 layers,  9 heads (3 KV), MLP 1536, vocab 49152, tied embeddings
  smollm2-360m  hidden 960,  32 layers, 15 heads (5 KV), MLP 2560, vocab 49152, tied embeddings
  smollm2-1.7b  hidden 2048, 24 layers, 32 heads (32 KV), MLP 8192, vocab 49152, tied embeddings
  llama-3.1-8b  hidden 4096, 32 layers, 32 heads (8 KV), MLP 14336, vocab 128256, untied

FLOPs (multiply-add = 2): a forward pass costs 2 x (matrix parameters of the decoder layers) per token,
plus attention 4 x seq_ctx x heads x head_dim per token and layer (seq_ctx = half the sequence, causal),
plus the LM head 2 x hidden x vocab per token whose logits are needed (TRL keeps only the completion's).
Backward: 2x the forward when weight gradients are needed (full fine-tuning), 1x when only the
activation gradients are (frozen base with LoRA, whose own weight gradients are negligible). So the GRPO
update costs 2x (LoRA) or 3x (full) a forward; the conventional "6 N per token" is also reported.

Memory (bytes): bf16 weights 2/param; LoRA training state 16/trainable param (fp32 weight, grad, Adam m, v);
full fine-tuning with mixed precision 16/param (bf16 weight + grad, fp32 master + Adam m, v) plus a frozen
bf16 reference copy for the KL (TRL's ref model; with LoRA the reference is the base with adapters off,
free); activations without checkpointing ~34 x hidden bytes per token and layer (Korthikanti et al. 2022,
with a fused attention kernel), with checkpointing 2 x hidden per token and layer plus one layer's worth;
logits of the completion tokens in fp32 twice (logits and log-softmax); the KV cache of generation
2 x layers x kv_heads x head_dim x 2 bytes per token.
"""

from __future__ import annotations

import argparse

ARCH = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "smollm2-360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                         num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=49152, tie_word_embeddings=True, rope_theta=130000.0),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}

GB = 1024 ** 3


def dims(a: dict) -> tuple[int, int, int, int, int, int, int]:
    h, L, nh, kv = a["hidden_size"], a["num_hidden_layers"], a["num_attention_heads"], a["num_key_value_heads"]
    hd = a.get("head_dim") or h // nh
    return h, L, nh, kv, hd, a["intermediate_size"], a["vocab_size"]


def layer_matrix_params(a: dict) -> int:
    h, L, nh, kv, hd, inter, V = dims(a)
    return h * nh * hd + 2 * h * kv * hd + nh * hd * h + 3 * h * inter


def params(a: dict) -> dict:
    h, L, nh, kv, hd, inter, V = dims(a)
    layers = L * (layer_matrix_params(a) + 2 * h)
    embed = V * h
    head = 0 if a["tie_word_embeddings"] else V * h
    return {"total": embed + layers + h + head, "layers_matrix": L * layer_matrix_params(a), "embedding": embed,
            "lm_head_untied": head}


def lora_params(a: dict, r: int = 16) -> int:
    """peft 'all-linear' (q, k, v, o, gate, up, down; not the LM head)."""
    h, L, nh, kv, hd, inter, V = dims(a)
    per = r * ((h + nh * hd) + 2 * (h + kv * hd) + (nh * hd + h) + 2 * (h + inter) + (inter + h))
    return L * per


def forward_flops(a: dict, n_seq: int, seq_len: int, logit_tokens: int) -> float:
    """One forward over n_seq sequences of seq_len tokens, logits for logit_tokens tokens in total."""
    h, L, nh, kv, hd, inter, V = dims(a)
    tokens = n_seq * seq_len
    body = 2 * L * layer_matrix_params(a) * tokens
    attn = 4 * L * nh * hd * (seq_len / 2) * tokens
    head = 2 * h * V * logit_tokens
    return body + attn + head


def update_flops(a: dict, n_seq: int, prompt_len: int, completion_len: int, lora: bool = True) -> dict:
    """The GRPO update (policy forward + backward over prompt + completion, logits for the completion)."""
    fwd = forward_flops(a, n_seq, prompt_len + completion_len, n_seq * completion_len)
    n = params(a)["layers_matrix"] + (0 if a["tie_word_embeddings"] else 0)
    tokens = n_seq * (prompt_len + completion_len)
    return {"needed": fwd * (2 if lora else 3), "six_n": 6 * (n + a["hidden_size"] * a["vocab_size"]) * tokens,
            "forward": fwd}


def generation_flops(a: dict, n_seq: int, prompt_len: int, new_tokens: int) -> float:
    """Prefill + decode with a KV cache (matrix work only; decode is memory-bound in practice)."""
    pre = forward_flops(a, n_seq, prompt_len, n_seq)
    h, L, nh, kv, hd, inter, V = dims(a)
    per_tok = 2 * L * layer_matrix_params(a) + 2 * h * V
    attn = sum(4 * L * nh * hd * (prompt_len + i) for i in range(new_tokens))
    return pre + n_seq * (new_tokens * per_tok + attn)


def memory(a: dict, n_seq: int, prompt_len: int, completion_len: int, lora: bool = True, checkpointing: bool = False,
           r: int = 16) -> dict:
    """Bytes on one GPU (DDP: every rank holds all of it, for its own n_seq sequences)."""
    h, L, nh, kv, hd, inter, V = dims(a)
    p = params(a)["total"]
    tokens = n_seq * (prompt_len + completion_len)
    out = {"weights_bf16": 2 * p}
    if lora:
        out["train_state"] = 16 * lora_params(a, r)
        out["reference"] = 0
    else:
        out["train_state"] = 14 * p  # + the bf16 weights above = 16 / param
        out["reference"] = 2 * p
    per_layer_token = 34 * h
    out["activations"] = (L * 2 * h + per_layer_token) * tokens if checkpointing else L * per_layer_token * tokens
    out["logits_fp32"] = 2 * 4 * n_seq * completion_len * V
    out["kv_cache"] = 2 * L * kv * hd * 2 * n_seq * (prompt_len + completion_len)
    out["total"] = sum(out.values())
    return out


def table(shapes=((16, 128, 48), (128, 128, 128))) -> str:
    lines = ["| model | params | LoRA r=16 params | sequences x tokens | LoRA, no ckpt | LoRA, ckpt | full FT, ckpt |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, a in ARCH.items():
        for n, pl, cl in shapes:
            m1 = memory(a, n, pl, cl, lora=True, checkpointing=False)["total"] / GB
            m2 = memory(a, n, pl, cl, lora=True, checkpointing=True)["total"] / GB
            m3 = memory(a, n, pl, cl, lora=False, checkpointing=True)["total"] / GB
            lines.append(f"| {name} | {params(a)['total'] / 1e9:.2f} B | {lora_params(a) / 1e6:.1f} M | {n} x ({pl}+{cl}) | "
                         f"{m1:.1f} GB | {m2:.1f} GB | {m3:.1f} GB |")
    return "\n".join(lines)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    print(table())
