"""Checkpoints as the analyses read them: weights of either framework (.pth or .pkl) and the
variant and classifier width they fit, checked against the architecture with one-line errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import CheckpointError, UsageError
from models.variants import DEPLOY_SUFFIX, VARIANTS, variant_of


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], str, int]:
    """Weights of a .pth or .pkl checkpoint of either framework, their variant and classes."""
    from models.weights import check_state, load_state_dict

    if not Path(path).is_file():
        raise UsageError(f"--checkpoint {path}: no such file (train.py / train_torch.py write one)")
    state = load_state_dict(path)
    try:
        model_name, num_classes = check_state(state, model_flag=model_flag)
    except CheckpointError as err:
        raise CheckpointError(f"--checkpoint {path}: {err}") from None
    return state, model_name, num_classes


@dataclass
class Weights:
    """A checkpoint's weights (torch layout, numpy) and the architecture they fit."""

    state: dict[str, np.ndarray]
    model_name: str  # a models.variants.ALL_MODEL_NAMES name: overlock_t or overlock_t_reparam
    head_classes: int  # width of the classifier (head.4.weight)

    @property
    def deploy(self) -> bool:
        """True when the weights are already in the reparameterised (deploy) form."""
        return self.model_name.endswith(DEPLOY_SUFFIX)


def model_flag(model_name: str) -> str:
    """The analyses' --model value for a model name: "overlock_t_reparam" -> "t" (they take the
    plain and the deploy form alike)."""
    return variant_of(model_name)[0].name


def load_weights(path: Path, model: str | None = None, ema: bool = False) -> Weights:
    """Read ``path`` and find the variant its weights fit (the rules: ``analysis.evaluate``).

    ``model``: xxt/xt/t/s/b from --model (plain or deploy form accepted). ``ema``: the EMA
    weights of a training checkpoint (``model_ema``). Raises UsageError or CheckpointError with
    one line.
    """
    from core.serialization import read_checkpoint
    from models.weights import (
        check_state,
        compare_state,
        expected_shapes,
        num_classes_of,
        state_dict_of,
    )

    if not Path(path).is_file():
        raise UsageError(f"--checkpoint {path}: no such file")
    raw = read_checkpoint(path)
    if ema:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("model_ema"), Mapping):
            raise UsageError(
                f"--ema: {path} holds no EMA weights (a training run with --ema-decay saves them)"
            )
        state = state_dict_of(raw["model_ema"], path)
    else:
        state = state_dict_of(raw, path)
    saved_name = raw.get("model_name") if isinstance(raw, Mapping) else None
    head = num_classes_of(state)
    if head < 1:
        raise CheckpointError(f"{path}: no classifier weight head.4.weight; not an OverLoCK model")

    def fits(name: str) -> bool:
        return not compare_state(state, expected_shapes(name, head)).count

    def recognise() -> str:
        try:
            return check_state(state, None, head, model_flag)[0]
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None

    if model is not None:
        name = VARIANTS[model].model_name
        for candidate in (name, name + DEPLOY_SUFFIX):
            if fits(candidate):
                return Weights(state, candidate, head)
        held = recognise()
        raise UsageError(
            f"--model {model}: {path} holds {held} weights, not {name}; "
            f"drop --model or use --model {variant_of(held)[0].name}"
        )
    if isinstance(saved_name, str):  # a training checkpoint names its variant
        try:
            check_state(state, saved_name, head, model_flag)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        return Weights(state, saved_name, head)
    return Weights(state, recognise(), head)
