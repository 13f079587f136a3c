"""Which model and layer turn texts into the discriminator's input: `HiddenStateEncoder`.

It reads (prompt, response) texts with a causal LM and keeps the hidden states of one layer at the
response positions. Shapes: B responses, T response tokens (right-padded), H the encoder model's
hidden size. A response mask is a bool tensor [B, T], True on real tokens.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from llmgan.errors import LlmganError
from llmgan.models import is_peft_model, unwrap_model

Prompt = Union[str, list]  # a plain string, or conversational: a list of {role, content} dicts


class _StopForward(Exception):
    """Raised from a forward hook once the requested layer has run (skips the layers above it)."""


def as_text(item: Any) -> str:
    """A completion/response as text: plain strings, or conversational [{role, content}, ...] (contents joined)."""
    if item is None:
        return ""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("content") or "")
    if isinstance(item, (list, tuple)):
        return "".join(as_text(m) for m in item)
    raise TypeError(f"expected a string or a list of messages, got {type(item).__name__}")


def cut_flags(completion_ids: Sequence[Sequence[int]], end_ids: Sequence[int]) -> list[bool]:
    """The generator's own cut flags from its completions' token ids [N][t_i] (as TRL hands them to reward
    functions, each cut after its first end token) -> [N] bools, True where a completion does not end in one of
    `end_ids` (it stopped at the token cap mid-text). What `discriminator.mark_end` reads for the game's samples."""
    ends = {int(e) for e in end_ids if e is not None}
    return [not len(ids) or int(ids[-1]) not in ends for ids in completion_ids]


class HiddenStateEncoder:
    """Hidden states of a causal LM at one layer for a batch of responses, response positions only.

    `encode(prompts, responses) -> (hidden [B, T, H] float32, mask [B, T] bool)` where T is the
    longest (truncated) response in tokens, rows are right-padded with zeros, and mask is True on
    response tokens. An empty response gives an all-False row (and T is at least 1).

    - condition_on_prompt: the LM reads the chat-formatted prompt followed by the response, and only
      the response positions are returned (they have seen the prompt through causal attention).
      Prompts may be conversational (list of {role, content}; the chat template with the assistant
      header is applied) or strings (used as given, e.g. already formatted).
    - otherwise the LM reads one anchor token (BOS, else EOS, else PAD) followed by the response; the
      anchor is not returned. It gives empty responses a valid input and every response the same start.

    Prompt and response are tokenized separately and concatenated, which is how the generator sees
    them at sampling time. Real and synthetic responses both go through this same text path (TRL's
    completion_ids are not used), so D cannot tell them apart by tokenization artefacts.

    `layer` indexes Hugging Face's `hidden_states`: 0 = embeddings, i = output of block i, -1 = the
    last block after the final norm. For 0 < layer < num_layers, a forward hook stops the model right
    after block `layer` (the blocks above it are not run) when `early_exit` is on.

    With `disable_adapters` (the 'reference' encoder) a peft model runs under `disable_adapter()`,
    i.e. as the frozen base model. The model is put in eval mode for the call and then restored to
    its previous mode (TRL keeps the policy in train mode). No gradients are taken.
    """

    def __init__(self, model: Any, tokenizer: Any, layer: int = -1, condition_on_prompt: bool = False,
                 max_response_tokens: int = 96, max_prompt_tokens: int = 256, disable_adapters: bool = False,
                 batch_size: int = 16, early_exit: bool = True, mark_end: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.condition_on_prompt = condition_on_prompt
        self.max_response_tokens = max_response_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.disable_adapters = disable_adapters
        self.batch_size = batch_size
        self.early_exit = early_exit
        if disable_adapters and not is_peft_model(model):
            raise LlmganError("disable_adapters needs a peft model; pass the frozen reference model itself instead")
        config = self._base().config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.num_layers = int(config.num_hidden_layers)
        self.hidden_size = int(config.hidden_size)
        if not -(self.num_layers + 1) <= layer <= self.num_layers:
            raise LlmganError(f"discriminator.hidden_layer={layer} is out of range for a model with {self.num_layers} "
                              f"layers (valid: {-(self.num_layers + 1)}..{self.num_layers}, -1 = last)")
        self.layer = layer % (self.num_layers + 1)  # resolved to 0..num_layers
        anchor = next((t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
                       if t is not None), None)
        if anchor is None:
            raise LlmganError("the encoder's tokenizer has no BOS, EOS or PAD token to start a response with")
        self.anchor_id = int(anchor)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else anchor)
        self.end_id: Optional[int] = None  # discriminator.mark_end: the id read after a response that ended
        if mark_end:
            if tokenizer.eos_token_id is None:
                raise LlmganError("discriminator.mark_end needs an EOS token in the encoder's tokenizer")
            self.end_id = int(tokenizer.eos_token_id)

    @classmethod
    def from_settings(cls, settings: Any, policy: Any, tokenizer: Any, reference_model: Any = None,
                      dtype: str = "auto", max_prompt_tokens: int = 256,
                      trust_remote_code: bool = False, device: Any = None, **_: Any) -> "HiddenStateEncoder":
        """Build the encoder named by `settings.encoder` (a DiscriminatorSettings).

        - 'reference': the peft policy with adapters disabled; for a full fine-tune, `reference_model`
          (e.g. TRL's ref_model) or else a frozen deep copy of the policy taken now (the start model).
        - 'policy': the live policy (its features move as it trains; the replay buffer keeps texts
          for that reason).
        - anything else: a model path/id, loaded once with its own tokenizer, frozen, and placed on
          `device` (default: the policy's device now; pass the training device when the trainer moves
          the policy there later).
        """
        kwargs = dict(layer=settings.hidden_layer, condition_on_prompt=settings.condition_on_prompt,
                      max_response_tokens=settings.max_response_tokens, max_prompt_tokens=max_prompt_tokens,
                      mark_end=getattr(settings, "mark_end", False))
        if settings.encoder == "policy":
            return cls(policy, tokenizer, **kwargs)
        if settings.encoder == "reference":
            if is_peft_model(policy):
                return cls(policy, tokenizer, disable_adapters=True, **kwargs)
            if reference_model is None:
                reference_model = copy.deepcopy(unwrap_model(policy))
            reference_model.eval().requires_grad_(False)
            return cls(reference_model, tokenizer, **kwargs)
        from llmgan.models import load_model, load_tokenizer

        other = load_model(settings.encoder, dtype=dtype, trust_remote_code=trust_remote_code)
        other.requires_grad_(False)
        if device is None:
            try:
                device = next(unwrap_model(policy).parameters()).device
            except StopIteration:
                device = None
        if device is not None:
            other.to(device)
        return cls(other, load_tokenizer(settings.encoder, trust_remote_code=trust_remote_code), **kwargs)

    # -- helpers ---------------------------------------------------------------------------------

    def _base(self) -> Any:
        """The transformers model under any DDP/peft wrappers (LoRA layers stay injected in it)."""
        model = unwrap_model(self.model)
        return model.get_base_model() if is_peft_model(model) else model

    def _decoder(self) -> nn.Module:
        """The decoder stack without the LM head (we never need logits)."""
        base = self._base()
        if hasattr(base, "get_decoder"):
            decoder = base.get_decoder()
            if decoder is not None:
                return decoder
        return getattr(base, "model", base)

    @property
    def device(self) -> torch.device:
        return next(self._base().parameters()).device

    def _adapters_context(self):
        return unwrap_model(self.model).disable_adapter() if self.disable_adapters else contextlib.nullcontext()

    def _token_ids(self, texts: list[str], max_tokens: int, keep: str) -> list[list[int]]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        if max_tokens <= 0:
            return [[] for _ in ids]
        return [x[:max_tokens] if keep == "first" else x[-max_tokens:] for x in ids]

    def _response_ids(self, texts: list[str], cut: Optional[Sequence[Optional[bool]]] = None) -> list[list[int]]:
        """Each response's first max_response_tokens token ids; with mark_end, the end id follows every response
        that ended within them. `cut` [B] (optional; None entries unknown): the generator's own flag, True where a
        sample stopped at its token cap without an end token (`cut_flags`, `llmgan generate`'s `cut_at_cap`). A row
        with a flag is marked when it is False and the text fits in max_response_tokens; a row without one (a real
        response, or samples from a file that lacks the flag) is marked when its tokens fit, so a real response
        longer than the cap and a cut sample get none alike. Read from the stored text alone, a cut sample can
        count fewer tokens than it had (`llmgan generate` strips it; 62 of 316 cut reply drafts, RESULTS.md), which
        is why samples carry the flag."""
        ids = self._token_ids(texts, self.max_response_tokens + (self.end_id is not None), keep="first")
        if self.end_id is None:
            return ids
        if cut is not None and len(cut) != len(ids):
            raise ValueError(f"one cut flag per response is needed (got {len(cut)} for {len(ids)})")
        flags = [None] * len(ids) if cut is None else list(cut)
        return [x + [self.end_id] if len(x) <= self.max_response_tokens and not c else x[:self.max_response_tokens]
                for x, c in zip(ids, flags)]

    def _prefixes(self, prompts: Optional[Sequence[Prompt]], n: int) -> list[list[int]]:
        """Token ids that precede each response: the formatted prompt, or the anchor token."""
        if not self.condition_on_prompt:
            return [[self.anchor_id] for _ in range(n)]
        if prompts is None or len(prompts) != n:
            raise ValueError(f"condition_on_prompt needs one prompt per response (got {0 if prompts is None else len(prompts)} for {n})")
        texts = [p if isinstance(p, str) else
                 self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        ids = self._token_ids(texts, self.max_prompt_tokens, keep="last")
        return [x if x else [self.anchor_id] for x in ids]

    def _layer_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[b, L] ids -> [b, L, H] hidden states at `self.layer`."""
        decoder = self._decoder()
        blocks = getattr(decoder, "layers", None)
        if (self.early_exit and 0 < self.layer < self.num_layers and isinstance(blocks, nn.ModuleList)
                and len(blocks) >= self.num_layers):
            captured: list[torch.Tensor] = []

            def stop(_module, _args, output):
                captured.append(output[0] if isinstance(output, (tuple, list)) else output)
                raise _StopForward

            handle = blocks[self.layer - 1].register_forward_hook(stop)
            try:
                decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            except _StopForward:
                pass
            finally:
                handle.remove()
            if captured:
                return captured[0]
        if self.layer == self.num_layers:
            return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, output_hidden_states=True)
        return out.hidden_states[self.layer]

    # -- the call --------------------------------------------------------------------------------

    def encode(self, prompts: Optional[Sequence[Prompt]], responses: Sequence[Any],
               requires_grad: bool = False, cut: Optional[Sequence[Optional[bool]]] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: B prompts (or None without condition_on_prompt), responses: B texts
        -> hidden [B, T, H] float32 on the model's device, mask [B, T] bool.

        requires_grad=True keeps the graph into the encoder model (used only by the `embedding`
        baseline objective, where the generator encodes its own responses with gradient).
        cut [B]: which samples stopped at the generation cap (read only with mark_end; `_response_ids`)."""
        with torch.set_grad_enabled(requires_grad):
            return self._encode(prompts, responses, cut)

    def _encode(self, prompts: Optional[Sequence[Prompt]], responses: Sequence[Any],
                cut: Optional[Sequence[Optional[bool]]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [as_text(r) for r in responses]
        n = len(texts)
        device = self.device
        resp_ids = self._response_ids(texts, cut)
        prefixes = self._prefixes(prompts, n)
        lengths = [len(r) for r in resp_ids]
        t_max = max([1, *lengths])
        hidden = torch.zeros(n, t_max, self.hidden_size, dtype=torch.float32, device=device)
        mask = torch.zeros(n, t_max, dtype=torch.bool, device=device)
        if n == 0:
            return hidden, mask
        # Sort by total length so each micro-batch carries little padding.
        order = sorted(range(n), key=lambda i: len(prefixes[i]) + lengths[i])
        model = unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            with self._adapters_context():
                for start in range(0, n, self.batch_size):
                    rows = order[start:start + self.batch_size]
                    seqs = [prefixes[i] + resp_ids[i] for i in rows]
                    width = max(len(s) for s in seqs)
                    # Right padding built by hand (the shared tokenizer is set to left padding for generation).
                    ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                    attn = torch.zeros(len(rows), width, dtype=torch.long)
                    for j, s in enumerate(seqs):
                        ids[j, :len(s)] = torch.tensor(s, dtype=torch.long)
                        attn[j, :len(s)] = 1
                    states = self._layer_states(ids.to(device), attn.to(device))  # [b, width, H]
                    for j, i in enumerate(rows):
                        p, r = len(prefixes[i]), lengths[i]
                        if r:
                            hidden[i, :r] = states[j, p:p + r].float()
                            mask[i, :r] = True
        finally:
            model.train(was_training)
        return hidden, mask


class TokenEncoder(HiddenStateEncoder):
    """What a token-reading discriminator (`discriminators.TOKEN_ARCHITECTURES`, e.g. `lm`) reads: token ids.

    `encode(prompts, responses) -> (ids [B, T] long, mask [B, T] bool)`: each row is the prefix (the
    chat-formatted prompt with condition_on_prompt, else the anchor token) followed by the response cut
    to max_response_tokens, right-padded; mask is True on every real token, prompt included. The same
    text path as `HiddenStateEncoder` (prompt and response tokenized separately, as the generator sees
    them), so real and generated responses differ only in their words. No model runs here: the
    discriminator holds its own copy of the start model (`start_model()`) and trains it.
    """

    def __init__(self, model: Any, tokenizer: Any, model_name: Optional[str] = None, dtype: str = "auto",
                 trust_remote_code: bool = False, **kwargs: Any):
        super().__init__(model, tokenizer, layer=-1, **kwargs)
        self.model_name = model_name
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code

    @classmethod
    def from_settings(cls, settings: Any, policy: Any, tokenizer: Any, model_name: Optional[str] = None,
                      dtype: str = "auto", max_prompt_tokens: int = 256, trust_remote_code: bool = False,
                      **_: Any) -> "TokenEncoder":
        """For a DiscriminatorSettings; `model_name` is the start model (model.name, after an SFT warm start
        the SFT model), which the discriminator copies."""
        return cls(policy, tokenizer, model_name=model_name, dtype=dtype, trust_remote_code=trust_remote_code,
                   condition_on_prompt=settings.condition_on_prompt, max_response_tokens=settings.max_response_tokens,
                   max_prompt_tokens=max_prompt_tokens, mark_end=getattr(settings, "mark_end", False))

    def start_model(self) -> Any:
        """A fresh copy of the start model, loaded from its folder (float32: it trains)."""
        from llmgan.models import load_model

        return load_model(self.model_name, dtype="float32" if self.dtype == "auto" else self.dtype,
                          trust_remote_code=self.trust_remote_code)

    def encode(self, prompts: Optional[Sequence[Prompt]], responses: Sequence[Any],
               requires_grad: bool = False, cut: Optional[Sequence[Optional[bool]]] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [as_text(r) for r in responses]
        n = len(texts)
        resp_ids = self._response_ids(texts, cut)
        seqs = [p + r for p, r in zip(self._prefixes(prompts, n), resp_ids)]
        width = max([1, *(len(s) for s in seqs)])
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(n, width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = True
        return ids.to(self.device), mask.to(self.device)
