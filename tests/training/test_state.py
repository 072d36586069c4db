"""The resumable training state: exact resume, atomic saves, safe loading, RNG capture, the metrics log."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.errors import VitlabError
from vitlab.training.augment import BatchAugment, mix, soft_target_cross_entropy
from vitlab.training.ema import ModelEma
from vitlab.training.optim import build_optimizer, set_lr
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

STEPS, BATCH, SEED = 6, 8, 0
DATA = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(7))
LABELS = torch.arange(32) % 4


class Run:
    """Everything a training loop builds: model (dropout and stochastic depth on), optimiser, EMA, the
    augmentation and mixing generators. Each step also draws from Python's and numpy's generators."""

    def __init__(self, make_vit):
        seed_all(SEED)
        self.model = make_vit(drop_rate=0.1, drop_path_rate=0.2).train()
        self.opt = build_optimizer(self.model, lr=1e-2, weight_decay=0.05)
        self.ema = ModelEma(self.model, decay=0.9)
        self.augment = BatchAugment(8, crop_scale=(0.5, 1.0), hflip=True, randaugment=(2, 9), random_erasing=0.5,
                                    group_size=4, seed=SEED)
        self.mix_gen = torch.Generator().manual_seed(SEED + 1)
        self.step = 0

    def generators(self):
        return {"augment": self.augment.generator, "mix": self.mix_gen}

    def train(self, steps: int) -> None:
        for _ in range(steps):
            order = torch.randperm(32, generator=torch.Generator().manual_seed(SEED + self.step // 4))
            index = order[(self.step % 4) * BATCH:][:BATCH]
            noise = random.random() + float(np.random.rand())  # stands for any host-side randomness
            x = self.augment(DATA[index]) * (1 + 1e-3 * noise)
            x, targets = mix(x, LABELS[index], 4, 0.8, 1.0, label_smoothing=0.1, generator=self.mix_gen)
            set_lr(self.opt, self.step, STEPS, 2, base_lr=1e-2, min_lr=1e-4)
            loss = soft_target_cross_entropy(self.model(x), targets)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.ema.update(self.model)
            self.step += 1

    def save(self, run_dir: Path) -> Path:
        return save_state(run_dir, self.model, self.opt, self.ema, None, self.step, self.step // 4,
                          capture_rng(self.generators()), [{"epoch": 0, "loss": 1.5}], {"note": "x"})


def resume(make_vit, run_dir: Path, spoil=None) -> tuple[Run, dict]:
    seed_all(12345)  # a fresh process would start from other generator states
    resumed = Run(make_vit)
    info = load_state(run_dir, resumed.model, resumed.opt, resumed.ema, None, generators=resumed.generators())
    if spoil is not None:
        spoil(resumed)
    resumed.step = info["step"]
    resumed.train(STEPS - STEPS // 2)
    return resumed, info


def test_resume_is_bit_identical(make_vit, tmp_path):
    straight = Run(make_vit)
    straight.train(STEPS)

    first = Run(make_vit)
    first.train(STEPS // 2)
    first.save(tmp_path)
    del first
    resumed, info = resume(make_vit, tmp_path)
    assert (info["step"], info["epoch"], info["metrics"], info["extra"]) == (3, 0, [{"epoch": 0, "loss": 1.5}], {"note": "x"})

    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema.module.state_dict().values(), resumed.ema.module.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.opt.state_dict()["state"][0]["exp_avg"].equal(resumed.opt.state_dict()["state"][0]["exp_avg"])

    # The test sees every source of randomness: leave any one generator unrestored and the weights differ.
    spoilers = [lambda run: torch.manual_seed(1), lambda run: random.seed(1), lambda run: np.random.seed(1),
                lambda run: run.augment.generator.manual_seed(1), lambda run: run.mix_gen.manual_seed(1)]
    for spoil in spoilers:
        careless, _ = resume(make_vit, tmp_path, spoil)
        assert not torch.equal(careless.model.head.weight, straight.model.head.weight)


def test_state_loads_with_weights_only_and_holds_no_classes(make_vit, tmp_path):
    run = Run(make_vit)
    run.train(1)
    path = run.save(tmp_path)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    save_state(tmp_path, run.model, run.opt, run.ema, scaler, 1, 0, capture_rng(run.generators()))
    state = torch.load(path, weights_only=True)
    fresh_scaler = torch.amp.GradScaler("cpu")
    load_state(tmp_path, run.model, run.opt, run.ema, fresh_scaler, generators=run.generators())
    assert fresh_scaler.get_scale() == 1024.0
    assert state["step"] == 1 and set(state["rng"]) >= {"python", "numpy", "torch", "cuda", "generators"}
    with pytest.raises(TypeError, match=r"state.extra.bad is a \w*Path"):
        save_state(tmp_path, run.model, extra={"bad": Path(".")})


def test_a_crash_mid_save_keeps_the_previous_state(make_vit, tmp_path, monkeypatch):
    run = Run(make_vit)
    run.train(1)
    run.save(tmp_path)
    good = (tmp_path / "state.pt").read_bytes()
    run.train(1)

    def crashing_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        run.save(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "state.pt").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]  # no temporary file left behind
    fresh = Run(make_vit)
    assert load_state(tmp_path, fresh.model, fresh.opt, fresh.ema, generators=fresh.generators())["step"] == 1


def test_bad_state_files_are_one_line_errors(make_vit, tmp_path):
    run = Run(make_vit)
    with pytest.raises(VitlabError, match="no state.pt here"):
        load_state(tmp_path, run.model)
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VitlabError, match="corrupt or unreadable training state"):
        load_state(tmp_path, run.model)
    save_state(tmp_path, run.model, step=0)
    with pytest.raises(VitlabError, match="does not match the one built now"):
        load_state(tmp_path, make_vit(embed_dim=32))
    with pytest.raises(VitlabError, match="no optimizer state"):
        load_state(tmp_path, run.model, run.opt)


def test_capture_and_restore_rng():
    gen = torch.Generator().manual_seed(3)
    states = capture_rng({"g": gen})
    expected = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))
    seed_all(99)
    gen.manual_seed(99)
    restore_rng(states, {"g": gen})
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2]) and torch.equal(torch.rand(1, generator=gen), expected[3])
    with pytest.raises(VitlabError, match="no random state for 'other'"):
        restore_rng(states, {"other": gen})


def test_metrics_log(tmp_path):
    assert read_metrics(tmp_path) == []
    append_metrics(tmp_path, {"epoch": 1, "loss": torch.tensor(0.5), "top1": 0.9})
    append_metrics(tmp_path, {"epoch": 2, "loss": float("nan")})
    with open(tmp_path / "metrics.jsonl", "a") as stream:
        stream.write('{"epoch": 3, "lo')  # a crash mid-append
    assert read_metrics(tmp_path) == [{"epoch": 1, "loss": 0.5, "top1": 0.9}, {"epoch": 2, "loss": None}]
    write_metrics(tmp_path, [{"epoch": 1}])
    assert read_metrics(tmp_path) == [{"epoch": 1}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nbroken\n{"epoch": 3}\n')
    with pytest.raises(VitlabError, match="metrics.jsonl:2: not a JSON line"):
        read_metrics(tmp_path)
