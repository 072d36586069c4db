"""One training loop: data → augmentation → model → loss → optimiser, epoch by epoch, into a run folder.

A run folder holds everything a run makes, each file written atomically:

    model.safetensors, config.json   the latest weights (EMA weights when EMA is on), loadable by
                                     `vitlab.load_pretrained` and `--checkpoint`
    train_config.json                the TrainConfig used
    state.pt                         model, optimiser, EMA, step, metrics: `--resume` continues
                                     exactly, so a killed run resumed ends with the same weights
    metrics.jsonl                    one JSON line per epoch
    curves.png                       loss and accuracy per epoch
    test.json                        the final evaluation on the test split (val when there is none)

The data order is a pure function of (seed, epoch), and every generator a step draws from is seeded from
(seed, epoch, rank) at the start of each epoch, so resuming from the end of an epoch reproduces the
uninterrupted run bit for bit, on one process or many.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from vitlab.checkpoints.files import json_writer, write_files
from vitlab.checkpoints.io import save_pretrained
from vitlab.data.datasets import ImageDataset, has_test_split, load_dataset
from vitlab.data.preprocessing import Preprocessing, normalize_batch
from vitlab.data.splits import per_class_sample
from vitlab.errors import VitlabError
from vitlab.evaluation.classification import Evaluation, evaluate
from vitlab.evaluation.features import fit_dataset
from vitlab.evaluation.plots import plot_training_curves
from vitlab.models.registry import create_model
from vitlab.models.vit import VisionTransformer
from vitlab.precision import autocast
from vitlab.training.finetune import freeze, pretrained_for_finetuning
from vitlab.training.augment import BatchAugment, mix, soft_target_cross_entropy
from vitlab.training.distributed import World, all_reduce_sum, setup, teardown
from vitlab.training.ema import ModelEma
from vitlab.training.optim import build_optimizer, schedule_steps, set_lr
from vitlab.training.recipe import TrainConfig
from vitlab.training.state import append_metrics, load_state, save_state, seed_all, write_metrics

TRAIN_CONFIG = "train_config.json"


@dataclass
class DataOptions:
    """How to find the data; not part of the recipe (a resumed run may find its data elsewhere)."""

    download: bool = False
    skip_bad_images: bool = False


@dataclass
class TrainResult:
    run_dir: Path
    epochs: list[dict[str, Any]] = field(default_factory=list)
    test: Evaluation | None = None
    test_split: str = "test"
    seconds: float = 0.0
    is_main: bool = True  # False on the other processes of a data-parallel job: they print nothing


def new_run_dir(config: TrainConfig) -> Path:
    if config.out:
        return Path(config.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.data}-{config.model}-{stamp}"


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run folder was started with."""
    path = Path(run_dir) / TRAIN_CONFIG
    if not path.is_file():
        raise VitlabError(f"{run_dir}: no {TRAIN_CONFIG}, so this is not a vitlab run folder to resume")
    return TrainConfig.from_file(path)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    data: DataOptions | None = None,
    progress: bool = True,
    device: str | None = None,
) -> TrainResult:
    """Train `config` into its run folder (`config.out`); with `resume`, continue the run saved there."""
    world = setup(device)
    try:
        return TrainingRun(config, world, data or DataOptions(), progress and world.is_main).fit(resume)
    finally:
        teardown(world)


class TrainingRun:
    """The objects of one run, built the same way for a fresh start and for a resume."""

    def __init__(self, config: TrainConfig, world: World, data: DataOptions, progress: bool):
        self.config, self.world, self.progress = config, world, progress
        self.run_dir = Path(config.out) if config.out else new_run_dir(config)
        if world.size > 1 and config.batch_size % world.size:
            raise VitlabError(f"batch size {config.batch_size} is the global batch: make it divisible by the {world.size} processes")
        if config.model is None and config.pretrained is None:  # before any data is decoded
            raise VitlabError(f"dataset {config.data} has no default model: pass --model NAME (`vitlab models` lists them)")
        seed_all(config.seed)
        load = dict(data_dir=config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
                    download=data.download, skip_bad_images=data.skip_bad_images)
        self.train_set = load_dataset(config.data, split="train", **load)
        if config.train_per_class is not None:
            self.train_set = self.train_set.subset(per_class_sample(self.train_set.labels.numpy(), config.train_per_class,
                                                                    config.seed))
        self.val_set = load_dataset(config.data, split="val", **load)
        self.test_set, self.test_split = _optional_test_split(config, load, self.val_set)
        self.model = self._build_model()
        self.train_set = fit_dataset(self.model, self.train_set)  # evaluate() gives val and test grey images as RGB
        self.model.to(world.device)
        img_size = self.model.config.img_size
        self.preprocessing = self.model.preprocessing
        self.augment = BatchAugment.from_config(config, img_size, self.train_set.channels, seed=config.seed + 1 + world.rank)
        self.mix_generator = torch.Generator().manual_seed(config.seed + 2 + world.rank)
        self.optimizer = build_optimizer(self.model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                                         layer_decay=config.layer_decay, betas=config.betas, momentum=config.momentum)
        self.ema = ModelEma(self.model, config.ema_decay) if config.ema_decay else None
        self.scaler = torch.amp.GradScaler(world.device.type) if config.precision == "fp16" else None
        self.local_batch = config.batch_size // world.size
        self.steps_per_epoch = len(self.train_set) // config.batch_size
        if self.steps_per_epoch == 0:
            raise VitlabError(f"batch size {config.batch_size} is larger than the {len(self.train_set)} training images: lower --batch-size")
        self.total_steps, self.warmup_steps = schedule_steps(config.epochs, self.steps_per_epoch, config.warmup_epochs)
        self.forward = self._forward_module()

    def _build_model(self) -> VisionTransformer:
        config = self.config
        overrides = dict(config.model_args)
        overrides.update(drop_path_rate=config.drop_path_rate, drop_rate=config.drop_rate)
        if config.img_size:
            overrides["img_size"] = config.img_size
        classes = self.train_set.classes
        if config.pretrained is not None:
            model = pretrained_for_finetuning(config.pretrained, len(classes), config.model, overrides)
            freeze(model, backbone=config.freeze_backbone, blocks=config.freeze_blocks)
        else:
            model = create_model(config.model, num_classes=len(classes), in_chans=self.train_set.channels, **overrides)
            channels = self.train_set.channels
            model.preprocessing = Preprocessing(model.config.img_size, (0.5,) * channels, (0.5,) * channels,
                                                interpolation="bilinear", crop_pct=1.0)
        model.labels = list(classes)
        return model

    def _forward_module(self) -> nn.Module:
        module: nn.Module = self.model
        if self.config.compile:
            module = torch.compile(module)
        if self.world.size > 1:
            ids = [self.world.device.index] if self.world.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        return module

    # --- the run ------------------------------------------------------------------------------------------

    def fit(self, resume: bool) -> TrainResult:
        start_epoch, step, history = 0, 0, []
        if resume:
            # no generator states: `seed_epoch` reseeds every stream from (seed, epoch, rank) before it is used
            info = load_state(self.run_dir, self.model, self.optimizer, self.ema, self.scaler, restore_random=False,
                              map_location=self.world.device)
            start_epoch, step, history = info["epoch"], info["step"], list(info["metrics"])
            if self.world.is_main:
                write_metrics(self.run_dir, history)  # drop lines written after the last saved state
        elif self.world.is_main:
            if (self.run_dir / "state.pt").exists() or (self.run_dir / "metrics.jsonl").exists():
                raise VitlabError(f"{self.run_dir} already holds a run: continue it with --resume {self.run_dir}, "
                                  "or pick another --out")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / TRAIN_CONFIG)
        began = time.perf_counter()
        for epoch in range(start_epoch, self.config.epochs):
            record, step = self._epoch(epoch, step)
            history.append(record)
            if self.world.is_main:
                append_metrics(self.run_dir, record)
                save_pretrained(self._weights_to_keep(), self.run_dir)
                save_state(self.run_dir, self.model, self.optimizer, self.ema, self.scaler, step=step,
                           epoch=epoch + 1, metrics_so_far=history)
                if (epoch + 1) % max(1, self.config.epochs // 10) == 0 or epoch + 1 == self.config.epochs:
                    plot_training_curves(history, self.run_dir / "curves.png")  # ~0.5 s: not every epoch
        result = TrainResult(self.run_dir, history, test_split=self.test_split, seconds=time.perf_counter() - began,
                             is_main=self.world.is_main)
        result.test = evaluate(self._weights_to_keep(), self.test_set, self.preprocessing,
                               precision=self.config.precision, progress=self.progress)
        if self.world.is_main:
            write_files(self.run_dir, {"test.json": json_writer({"split": self.test_split, **result.test.to_dict()})})
        return result

    def _weights_to_keep(self) -> VisionTransformer:
        """The EMA copy when EMA is on (a deep copy: it carries the model's labels and preprocessing)."""
        return self.model if self.ema is None else self.ema.module

    def epoch_order(self, epoch: int) -> Tensor:
        """This process's share of the epoch's permutation: a pure function of (seed, epoch)."""
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_set), generator=generator)[: self.steps_per_epoch * self.config.batch_size]
        batches = order.view(self.steps_per_epoch, self.config.batch_size)
        return batches[:, self.world.rank * self.local_batch : (self.world.rank + 1) * self.local_batch]

    def seed_epoch(self, epoch: int) -> None:
        """Seed what a step draws from (stochastic depth, augmentation, mixing) from (seed, epoch, rank).

        This is what makes resume exact, whatever the number of processes, with no generator state saved:
        only rank 0 writes the state, so saved generator states could not give each process its own streams
        back. `torch.manual_seed` seeds the CPU and every CUDA device.
        """
        streams = np.random.SeedSequence([self.config.seed, epoch, self.world.rank]).generate_state(3, dtype=np.uint64)
        torch.manual_seed(int(streams[0]))
        self.augment.generator.manual_seed(int(streams[1]))
        self.mix_generator.manual_seed(int(streams[2]))

    def _epoch(self, epoch: int, step: int) -> tuple[dict[str, Any], int]:
        config, device = self.config, self.world.device
        self.model.train()
        loss_sum = hits = seen = 0.0
        began = time.perf_counter()
        batches = self.epoch_order(epoch)
        self.seed_epoch(epoch)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not self.progress, leave=False,
                   unit="batch", dynamic_ncols=True)
        for indices in bar:
            lr = set_lr(self.optimizer, step, self.total_steps, self.warmup_steps, config.lr, config.min_lr)
            images = self.train_set.images[indices].to(device, non_blocking=True)
            labels = self.train_set.labels[indices].to(device, non_blocking=True)
            loss, logits = self.train_step(images, labels)
            if not math.isfinite(loss):
                raise VitlabError(
                    f"the loss became {loss} at epoch {epoch + 1}, step {step}: training stopped; the last good "
                    f"checkpoint in {self.run_dir} is kept. Lower --lr or use --precision fp32"
                )
            step += 1
            loss_sum += loss * len(labels)
            hits += (logits.argmax(-1) == labels).sum().item()
            seen += len(labels)
            if self.progress:
                rate = seen * self.world.size / (time.perf_counter() - began)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{hits / seen:.3f}", img_s=f"{rate:.0f}", lr=f"{lr:.1e}")
        seconds = time.perf_counter() - began
        loss_sum, hits, seen = all_reduce_sum([loss_sum, hits, seen], self.world)
        val = evaluate(self._weights_to_keep(), self.val_set, self.preprocessing, precision=config.precision)
        record = dict(epoch=epoch + 1, step=step, lr=lr, train_loss=loss_sum / seen, train_top1=hits / seen,
                      val_loss=val.loss, val_top1=val.top1, val_top5=val.top5, img_per_s=seen / seconds,
                      seconds=seconds)
        if self.progress:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.4f}, val top-1 "
                       f"{val.top1:.4f}, {record['img_per_s']:.0f} img/s")
        return record, step

    def train_step(self, images: Tensor, labels: Tensor) -> tuple[float, Tensor]:
        return self.optimise(*self.prepare_batch(images, labels))

    def prepare_batch(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images and labels → augmented, normalised, mixed inputs and their soft targets."""
        config = self.config
        inputs = normalize_batch(self.augment(images.float().div_(255.0)), self.preprocessing)
        return mix(inputs, labels, self.model.num_classes, config.mixup_alpha, config.cutmix_alpha,
                   config.mix_prob, config.label_smoothing, self.mix_generator)

    def optimise(self, inputs: Tensor, targets: Tensor) -> tuple[float, Tensor]:
        """One optimiser step on a prepared batch; returns the loss and the (detached) logits."""
        config = self.config
        with autocast(config.precision, self.world.device.type):
            logits = self.forward(inputs)
        loss = soft_target_cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            return loss.item(), logits.detach()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if config.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.item(), logits.detach()


def _optional_test_split(config: TrainConfig, load: dict[str, Any], val_set: ImageDataset) -> tuple[ImageDataset, str]:
    """The test split where the dataset has one here (or --download can fetch it); otherwise val, and say so."""
    if load["download"] or has_test_split(config.data, config.data_dir):
        return load_dataset(config.data, split="test", **load), "test"
    return val_set, "val"
