"""ModelEma: the averaging maths, buffers, warmup, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitlab.training.ema import ModelEma


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


def test_update_is_an_exponential_moving_average():
    torch.manual_seed(0)
    model = WithBuffer()
    ema = ModelEma(model, decay=0.9)
    start = model.linear.weight.detach().clone()
    assert not ema.module.linear.weight.requires_grad and not ema.module.training
    with torch.no_grad():
        model.linear.weight.add_(1.0)
        model.bn.running_mean.fill_(5.0)
        model.bn.num_batches_tracked.fill_(7)
    ema.update(model)
    assert torch.allclose(ema.module.linear.weight, 0.9 * start + 0.1 * (start + 1.0))
    assert torch.equal(ema.module.bn.running_mean, model.bn.running_mean)  # buffers are copied, not averaged
    assert int(ema.module.bn.num_batches_tracked) == 7
    ema.update(model)
    assert torch.allclose(ema.module.linear.weight, start + 1.0 - 0.81, atol=1e-6)
    assert ema.updates == 2


def test_warmup_decay():
    ema = ModelEma(nn.Linear(2, 2), decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.updates = 10_000
    assert ema.current_decay() == 0.999


def test_state_dict_round_trip(vit):
    ema = ModelEma(vit, decay=0.5)
    with torch.no_grad():
        vit.head.weight.add_(2.0)
    ema.update(vit)
    other = ModelEma(vit, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.5 and other.updates == 1
    assert torch.equal(other.module.head.weight, ema.module.head.weight)
