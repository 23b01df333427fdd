"""Validation metrics computed in numpy, the same for both frameworks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def topk_correct(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the k highest logits, for each k."""
    order = np.argsort(-logits, axis=1, kind="stable")
    hits = order == labels[:, None]
    return [int(hits[:, : min(k, logits.shape[1])].any(axis=1).sum()) for k in ks]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross entropy, computed in float64 (validation loss, same for both sides)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(labels)), labels]
