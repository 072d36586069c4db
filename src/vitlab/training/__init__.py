"""Training building blocks: the recipe, optimiser and schedule, augmentation and mixing, EMA, resumable state.

Each piece is a plain function or a small class with explicit state, so a training loop composes them and a
resumed run continues bit for bit (see `state`).
"""

from vitlab.training.augment import BatchAugment, mix, smooth_one_hot, soft_target_cross_entropy
from vitlab.training.ema import ModelEma
from vitlab.training.optim import build_optimizer, lr_at, param_groups, schedule_steps, set_lr, unwrap_model
from vitlab.training.recipe import TrainConfig, preset_for
from vitlab.training.state import (
    append_metrics,
    capture_rng,
    load_state,
    read_metrics,
    restore_rng,
    save_state,
    seed_all,
    write_metrics,
)

__all__ = [
    "BatchAugment",
    "ModelEma",
    "TrainConfig",
    "append_metrics",
    "build_optimizer",
    "capture_rng",
    "load_state",
    "lr_at",
    "mix",
    "param_groups",
    "preset_for",
    "read_metrics",
    "restore_rng",
    "save_state",
    "schedule_steps",
    "seed_all",
    "set_lr",
    "smooth_one_hot",
    "soft_target_cross_entropy",
    "unwrap_model",
    "write_metrics",
]
