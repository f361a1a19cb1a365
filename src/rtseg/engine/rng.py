"""The random-number state a resumed run restores (torch, CUDA, numpy, Python), stored so that weights_only loading reads it."""
from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "rng_state", "restore_rng_state"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator's state; numpy's and Python's as JSON text (weights_only loading accepts strings, not arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": json.dumps([kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]),
        "python": json.dumps(random.getstate()),
    }


def restore_rng_state(rng: dict[str, Any]) -> None:
    """Put back a state from :func:`rng_state`."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    kind, keys, pos, has_gauss, cached = json.loads(rng["numpy"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    state = json.loads(rng["python"])
    random.setstate((state[0], tuple(state[1]), state[2]))
