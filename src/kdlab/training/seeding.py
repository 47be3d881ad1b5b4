"""The one place where seeds and global numerical flags are set."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from kdlab.errors import ConfigError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). Call once at the top of each stage's main."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; `cuda` without a GPU is a config error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is cuda but no CUDA device is visible; use device: auto or cpu")
    return torch.device(requested)


def configure_torch(device: torch.device) -> None:
    """Numerical flags for a run: exact on CPU, fast (TF32, cuDNN autotune) on CUDA."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True)


def start_run(seed: int, requested_device: str) -> torch.device:
    """What every stage does first: seed, pick the device, set the numerical flags."""
    seed_everything(seed)
    device = resolve_device(requested_device)
    configure_torch(device)
    return device
