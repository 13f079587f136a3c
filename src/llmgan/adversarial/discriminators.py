"""Discriminator architectures: one registry entry each (`ARCHITECTURES`).

Most architectures read the hidden states of a frozen encoder model (`features.HiddenStateEncoder`):
`forward(hidden [B, T, H] float, mask [B, T] bool) -> logits [B]` (real = positive). Rows whose mask is
all False are empty responses and must still get a finite logit. To add one, write a builder
`(input_size H, settings: DiscriminatorSettings) -> nn.Module` and decorate it with
`@register_architecture("name")`; `discriminator.architecture=name` then selects it (config validation
reads the names from this registry).

An architecture registered with `reads="tokens"` reads token ids instead (`features.TokenEncoder`: the
chat-formatted prompt and the response, right-padded) and is trained end to end, its own copy of a language
model included: `forward(ids [B, T] long, mask [B, T] bool) -> logits [B]`; its builder gets
`(encoder: TokenEncoder, settings)`. `lm` below is one: the generator's own LM as the discriminator (GAD).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from llmgan.errors import LlmganError

ARCHITECTURES: dict[str, Callable[[Any, Any], nn.Module]] = {}
"""Architecture name -> builder(input_size, DiscriminatorSettings) -> nn.Module (hidden, mask) -> logits [B];
for the names in TOKEN_ARCHITECTURES builder(TokenEncoder, DiscriminatorSettings) -> nn.Module (ids, mask)."""

TOKEN_ARCHITECTURES: set[str] = set()
"""The architectures that read token ids and train their own language model (see the module docstring)."""


def register_architecture(name: str, reads: str = "states") -> Callable:
    """Decorator: add a builder to ARCHITECTURES under `name`; reads='tokens' for an end-to-end one."""
    if reads not in ("states", "tokens"):
        raise ValueError(f"reads must be 'states' or 'tokens' (got {reads!r})")

    def add(builder: Callable[[Any, Any], nn.Module]) -> Callable[[Any, Any], nn.Module]:
        ARCHITECTURES[name] = builder
        (TOKEN_ARCHITECTURES.add if reads == "tokens" else TOKEN_ARCHITECTURES.discard)(name)
        return builder
    return add


def reads_tokens(settings: Any) -> bool:
    """Whether `settings.architecture` reads token ids (a TokenEncoder) rather than hidden states."""
    return getattr(settings, "architecture", "transformer") in TOKEN_ARCHITECTURES


def build_discriminator(settings: Any, input_size: int, encoder: Any = None) -> nn.Module:
    """The architecture `settings.architecture` (default 'transformer') for inputs of width `input_size`;
    a token-reading one is built from `encoder` (a TokenEncoder)."""
    name = getattr(settings, "architecture", "transformer")
    if name not in ARCHITECTURES:
        raise LlmganError(f"discriminator.architecture must be one of {', '.join(ARCHITECTURES)} (got {name!r})")
    if name in TOKEN_ARCHITECTURES:
        if encoder is None or not hasattr(encoder, "start_model"):
            raise LlmganError(f"discriminator.architecture={name} reads token ids: it needs a TokenEncoder")
        return ARCHITECTURES[name](encoder, settings)
    return ARCHITECTURES[name](input_size, settings)


class Discriminator(nn.Module):
    """Transformer encoder + optional LSTM + pooling over response tokens + linear classifier.

    forward(hidden [B, T, H], mask [B, T] bool) -> logits [B] (real = positive).

    Rows whose mask is all False (an empty response) get a learned "empty" vector instead of a
    pooled one, and their attention mask is opened on position 0 so no attention row is fully masked
    (a fully masked softmax is NaN, in both PyTorch's slow path and its fused eval fast path).
    """

    def __init__(self, input_size: int, width: int = 256, layers: int = 2, heads: int = 4, dropout: float = 0.1,
                 pooling: str = "mean", lstm: bool = False):
        super().__init__()
        if pooling not in ("mean", "last", "attention"):
            raise LlmganError(f"discriminator.pooling must be mean, last or attention (got {pooling!r})")
        if width % heads:
            raise LlmganError(f"discriminator.width ({width}) must be divisible by discriminator.heads ({heads})")
        self.pooling = pooling
        # LM hidden states carry a few huge "massive activation" channels; a LayerNorm before the
        # projection puts every layer's and every model's states on one scale, so one lr fits all.
        self.input_norm = nn.LayerNorm(input_size)
        self.input_proj = nn.Linear(input_size, width)
        self.input_dropout = nn.Dropout(dropout)
        # No positional embedding: the inputs come out of a causal LM (rotary positions, causal
        # attention), so every state already knows where it is; a learned table would add a hard
        # maximum length and parameters that only ever see the few positions short posts reach.
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # enable_nested_tensor=False: the nested-tensor path drops padded positions and is the one
        # that turns a fully padded row into NaN; we keep dense tensors and explicit masks.
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        # Unidirectional LSTM over right-padded sequences: outputs at real positions never see the
        # padding after them, so no packing is needed.
        self.lstm = nn.LSTM(width, width, batch_first=True) if lstm else None
        self.attn_score = nn.Linear(width, 1) if pooling == "attention" else None
        self.empty = nn.Parameter(torch.zeros(width))
        self.head = nn.Linear(width, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, H] float, mask [B, T] bool (True = response token) -> logits [B]."""
        mask = mask.bool()
        if mask.shape[1] == 0:  # a batch of empty responses: give attention one (masked-out) position
            hidden = hidden.new_zeros(hidden.shape[0], 1, hidden.shape[2])
            mask = mask.new_zeros(mask.shape[0], 1)
        has_tokens = mask.any(dim=1)  # [B]
        # Open position 0 for empty rows so attention always has a key; their output is replaced below.
        attend = mask.clone()
        attend[:, 0] |= ~has_tokens
        x = self.input_dropout(self.input_proj(self.input_norm(hidden.to(self.input_proj.weight.dtype))))
        x = self.encoder(x, src_key_padding_mask=~attend)  # [B, T, W]
        if self.lstm is not None:
            x, _ = self.lstm(x)
        pooled = self._pool(x, mask, attend)  # [B, W], finite for every row
        pooled = torch.where(has_tokens[:, None], pooled, self.empty.to(pooled.dtype).expand_as(pooled))
        return self.head(pooled).squeeze(-1)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """x [B, T, W] -> [B, W] over the tokens in `mask`; every branch stays finite on empty rows."""
        if self.pooling == "mean":
            weights = mask.to(x.dtype)
            return (x * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)
        if self.pooling == "last":
            positions = torch.arange(mask.shape[1], device=mask.device)
            last = torch.where(mask, positions, -1).max(dim=1).values.clamp(min=0)  # [B]
            return x[torch.arange(x.shape[0], device=x.device), last]
        scores = self.attn_score(x).squeeze(-1).masked_fill(~attend, float("-inf"))  # [B, T]
        return (scores.softmax(dim=1)[..., None] * x).sum(1)



@register_architecture("transformer")
def transformer(input_size: int, s: Any) -> nn.Module:
    """The default: transformer encoder (+ optional LSTM) over the response states, pooled, linear head."""
    return Discriminator(input_size, width=s.width, layers=s.layers, heads=s.heads, dropout=s.dropout,
                         pooling=s.pooling, lstm=s.lstm)


class LMDiscriminator(nn.Module):
    """The generator's own LM as the discriminator (GAD, arXiv 2511.10643): a copy of the start model's first
    `layers` decoder layers, trained end to end, and a scalar head on the state of the last token.

    forward(ids [B, T] long, mask [B, T] bool: the chat-formatted prompt then the response, right-padded)
    -> logits [B] (real = positive). It reads what the generator reads, with the generator's tokenizer
    (cased, emoji as written), and its encoding learns. With `lora_rank` > 0 only LoRA adapters on the kept
    layers and the head train (the copy's weights stay frozen, and a checkpoint holds the trainable part
    only: `trainable_only_in_checkpoints`); with 0 the kept layers and the final norm train fully
    (embeddings stay frozen either way).
    """

    trainable_only_in_checkpoints = True

    def __init__(self, model: nn.Module, layers: int = 0, lora_rank: int = 16, lora_alpha: int = 32):
        super().__init__()
        base = getattr(model, "get_decoder", lambda: None)() or getattr(model, "model", model)
        blocks = getattr(base, "layers", None)
        if not isinstance(blocks, nn.ModuleList):
            raise LlmganError("discriminator.architecture=lm needs a decoder with a `layers` list (Llama-style models)")
        keep = len(blocks) if layers <= 0 else min(layers, len(blocks))
        base.layers = nn.ModuleList(list(blocks)[:keep])
        if hasattr(base, "config"):
            base.config.num_hidden_layers = keep
            for key in ("layer_types",):  # per-layer lists some configs carry
                if isinstance(getattr(base.config, key, None), list):
                    setattr(base.config, key, getattr(base.config, key)[:keep])
        self.decoder = base
        self.decoder.requires_grad_(False)
        if lora_rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            inject_adapter_in_model(LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0,
                                               target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"]), self.decoder)
            for name, p in self.decoder.named_parameters():
                p.requires_grad_("lora_" in name)
        else:
            self.decoder.layers.requires_grad_(True)
            if getattr(self.decoder, "norm", None) is not None:
                self.decoder.norm.requires_grad_(True)
        width = int(self.decoder.config.hidden_size)
        self.head = nn.Linear(width, 1)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(width))
        nn.init.zeros_(self.head.bias)
        self.decoder.float()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [B, T] long, mask [B, T] bool (right padding) -> logits [B]."""
        mask = mask.bool()
        states = self.decoder(input_ids=ids, attention_mask=mask.long(), use_cache=False).last_hidden_state
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = torch.where(mask, positions, -1).max(dim=1).values.clamp(min=0)  # [B]
        return self.head(states[torch.arange(ids.shape[0], device=ids.device), last].float()).squeeze(-1)


@register_architecture("lm", reads="tokens")
def lm(encoder: Any, s: Any) -> nn.Module:
    """A copy of the start model (`encoder.start_model()`), `s.lm_layers` decoder layers, LoRA rank `s.lm_lora_rank`."""
    return LMDiscriminator(encoder.start_model(), layers=s.lm_layers, lora_rank=s.lm_lora_rank,
                           lora_alpha=2 * max(1, s.lm_lora_rank))
