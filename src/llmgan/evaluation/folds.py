"""The one fold assignment every detector is trained and scored on (the linear ones, the fine-tuned one).

Grouped by prompt: all rows that answer the same prompt (its generated and real responses, and the other
replies to the same post) fall in one fold, so no detector is scored on a prompt it was trained on.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from llmgan.errors import LlmganError


def prompt_groups(prompts: Optional[Sequence[Any]], n: int, folds: int = 5):
    """One group id per row [n]: the index of the row's prompt text among the distinct prompts. Without
    prompts, or with fewer distinct prompts than folds (grouping by prompt is then impossible), one group
    per row (a row's generated and real response still share a fold)."""
    import numpy as np

    if not prompts:
        return np.arange(n)
    ids: dict[str, int] = {}
    groups = np.asarray([ids.setdefault(str(p), len(ids)) for p in prompts])
    return groups if len(ids) >= folds else np.arange(n)


def fold_splits(labels, groups=None, *, folds: int = 5, seed: int = 0) -> list[tuple[Any, Any]]:
    """The (train_idx, test_idx) pairs every detector is trained and scored on.

    With `groups` (one id per row; a prompt's generated and real response share an id):
    StratifiedGroupKFold(folds, shuffle=True, random_state=seed); without: StratifiedKFold(folds,
    shuffle=True, random_state=seed). Rows are ordered generated first, then real.
    """
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(labels).astype(int)
    x = np.zeros((len(y), 1))
    if min(int((y == 1).sum()), int((y == 0).sum())) < folds:
        raise LlmganError(f"need at least {folds} generated and {folds} real responses for "
                          f"{folds}-fold cross-validation")
    if groups is None:
        return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(cv.split(x, y, groups=np.asarray(groups)))


