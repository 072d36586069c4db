"""An exponential moving average of a model's weights, evaluated (and saved) beside the trained model."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vitlab.training.optim import unwrap_model


class ModelEma:
    """ema = decay * ema + (1 - decay) * weights after every optimiser step; buffers are copied.

    `module` is a frozen copy of the model (eval mode, no gradients) holding the averaged weights, in the
    model's dtype (float32 under autocast) on the model's device. With `warmup`, the decay used at update n
    is min(decay, (1 + n) / (10 + n)), so that a short run's average is not dominated by the random
    initialisation. `state_dict()` holds the weights and the update count: all a resumed run needs.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self._param_names = {name for name, _ in self.module.named_parameters()}

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimiser step)."""
        decay = self.current_decay()
        source = unwrap_model(model).state_dict()
        averaged, copied_from, copied_to = [], [], []
        for name, target in self.module.state_dict().items():
            value = source[name]
            if target.is_floating_point() and name in self._param_names:
                averaged.append((target, value))
            else:
                copied_to.append(target)
                copied_from.append(value)
        if averaged:
            targets = [t for t, _ in averaged]
            values = [v.detach().to(dtype=t.dtype) for t, v in averaged]
            torch._foreach_lerp_(targets, values, 1.0 - decay)
        for target, value in zip(copied_to, copied_from):
            target.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
