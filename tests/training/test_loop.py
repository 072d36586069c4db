"""The training loop end to end on the built-in digits, with a tiny model: run folder, exact resume after a
SIGKILL, DDP equal to one process, a non-finite loss stopping cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vitlab
from vitlab import VitlabError
from vitlab.training import loop as loop_module
from vitlab.training.loop import train
from vitlab.training.recipe import TrainConfig

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_dim": 64}
# No augmentation, mixing or stochastic depth: what must match across process counts is the arithmetic.
PLAIN = dict(rotate_degrees=0.0, translate=0.0, drop_path_rate=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0)


def tiny_config(out: Path, **overrides) -> TrainConfig:
    values = dict(data="digits", model_args=TINY, epochs=2, batch_size=64, out=str(out))
    return TrainConfig.resolve(None, **{**values, **overrides})


def cli_args(out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "--out", str(out), "--epochs", str(epochs), "--batch-size", "64",
            "--set", f"model_args={json.dumps(TINY)}", *extra]  # fmt: skip


def test_run_folder_holds_everything(tmp_path):
    result = train(tiny_config(tmp_path / "run"), progress=False)
    run = result.run_dir
    for name in ("model.safetensors", "config.json", "train_config.json", "state.pt", "metrics.jsonl", "curves.png", "test.json"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert result.test_split == "test" and result.test.num_images == 359 and 0 <= result.test.top1 <= 1
    model = vitlab.load_pretrained(run)
    assert model.labels == [str(d) for d in range(10)] and model.config.in_chans == 1
    assert model.preprocessing.img_size == (8, 8)
    assert json.loads((run / "test.json").read_text())["top1"] == result.test.top1


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL half-way (in a subprocess), --resume, and the result equals the uninterrupted run bit for bit."""
    epochs = 4
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    command = [sys.executable, "-m", "vitlab"]
    subprocess.run(command + cli_args(whole, epochs), check=True, capture_output=True)
    process = subprocess.Popen(command + cli_args(killed, epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "test.json").exists()
    subprocess.run(command + ["train", "--resume", str(killed)], check=True, capture_output=True)
    expected, resumed = _weights(whole), _weights(killed)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    assert [json.loads(line)["epoch"] for line in (killed / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun with 2 gloo processes and the same global batch ends with the one-process weights."""
    flags = [f"--set={key}={json.dumps(value)}" for key, value in PLAIN.items()]
    single, double = tmp_path / "single", tmp_path / "double"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "vitlab"] + cli_args(single, 2, *flags), check=True, capture_output=True, env=env)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "vitlab"]
    done = subprocess.run(launch + cli_args(double, 2, *flags), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = _weights(single), _weights(double)
    # The key bias adds the same q·b_k to every score of a row, so softmax cancels it: its gradient is pure
    # rounding noise, which Adam scales up to full-size steps. Everything else must agree.
    width = TINY["embed_dim"]
    for name in [n for n in one if n.endswith("attn.qkv.bias")]:
        for weights in (one, two):
            weights[name] = torch.cat([weights[name][:width], weights[name][2 * width :]])
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "run", epochs=3)
    calls = {"n": 0}
    real = loop_module.soft_target_cross_entropy

    def poisoned(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] > 30 else loss  # an epoch is 20 steps of 64: epoch 2 goes bad

    monkeypatch.setattr(loop_module, "soft_target_cross_entropy", poisoned)
    with pytest.raises(VitlabError, match="the loss became nan at epoch 2"):
        train(config, progress=False)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["epoch"] == 1
    assert vitlab.load_pretrained(tmp_path / "run").config.embed_dim == 32


def test_each_epoch_reseeds_every_stream_per_rank(tmp_path):
    """A resumed process (of any rank) draws what the uninterrupted one would: streams depend on (seed, epoch, rank)."""
    from types import SimpleNamespace

    from vitlab.training.loop import TrainingRun

    def draws(rank: int, epoch: int, noise_before: bool = False) -> list[torch.Tensor]:
        run = TrainingRun.__new__(TrainingRun)
        run.config, run.world = SimpleNamespace(seed=3), SimpleNamespace(rank=rank)
        run.augment, run.mix_generator = SimpleNamespace(generator=torch.Generator()), torch.Generator()
        if noise_before:  # whatever happened earlier in the process must not matter
            torch.rand(7), torch.rand(5, generator=run.mix_generator)
        run.seed_epoch(epoch)
        return [torch.rand(4), torch.rand(4, generator=run.augment.generator), torch.rand(4, generator=run.mix_generator)]

    for a, b in zip(draws(1, 5), draws(1, 5, noise_before=True)):
        assert torch.equal(a, b)
    streams = [torch.cat(draws(rank, epoch)) for rank, epoch in ((0, 5), (1, 5), (0, 6))]
    assert not torch.equal(streams[0], streams[1]) and not torch.equal(streams[0], streams[2])
