"""Small statistics shared by the judge (`llmgan.evaluation`) and the game (`llmgan.adversarial`), so that
neither imports the other: a leaf module (numpy and scipy only)."""

from __future__ import annotations

from llmgan.errors import LlmganError


def rank_auroc(scores_positive, scores_negative) -> float:
    """AUROC of positive (label 1) vs negative (label 0) scores, from the Mann-Whitney rank sum.

    scores_positive: shape (n_p,); scores_negative: shape (n_n,). Returns P(p > n) + 0.5 P(p = n) over all
    n_p * n_n pairs, which equals scikit-learn's `roc_auc_score` (ties count one half). One sort instead of
    scikit-learn's input validation, so a bootstrap (thousands of AUROCs) takes a second, not a minute.
    The judge calls generated responses positive; the discriminator's held-out AUROC calls real ones positive.
    """
    import numpy as np
    from scipy.stats import rankdata

    g, r = np.asarray(scores_positive, dtype=np.float64), np.asarray(scores_negative, dtype=np.float64)
    if len(g) == 0 or len(r) == 0:
        raise LlmganError(f"an AUROC needs scores of both kinds (got {len(g)} positive and {len(r)} negative)")
    ranks = rankdata(np.r_[g, r])
    return float((ranks[:len(g)].sum() - len(g) * (len(g) + 1) / 2) / (len(g) * len(r)))
