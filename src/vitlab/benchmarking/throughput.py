"""Images per second, achieved GFLOP/s and the share of the measured matmul peak, vitlab vs Hugging Face.

Both models get identical weights (vitlab's exported through its own Hugging Face writer) and identical
inputs, optimiser and precision; they are timed in alternating rounds of the same run so that machine drift
hits both alike, and the median round counts. FLOPs come from PyTorch's FlopCounterMode on the vitlab model
(matmuls, convolutions and attention; 2 FLOPs per multiply-add).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitlab.errors import VitlabError
from vitlab.precision import autocast
from vitlab.models.registry import create_model
from vitlab.models.vit import VisionTransformer

Mode = Literal["inference", "train"]
Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class BenchCase:
    model: str
    mode: Mode
    batch_size: int
    precision: Precision = "fp32"
    img_size: int | None = None
    compile: bool = False

    @property
    def label(self) -> str:
        compiled = ", compiled" if self.compile else ""
        return f"{self.model} {self.mode} b{self.batch_size} {self.precision}{compiled}"


def default_suite(compile: bool = False) -> list[BenchCase]:
    """The cases issue 2 sets targets for: ViT-S/16 inference, tiny 32 px ViT training, fp32 and bf16."""
    return [
        BenchCase("vit_small_patch16_224", "inference", 16, precision, compile=compile) for precision in ("fp32", "bf16")
    ] + [BenchCase("vit_cifar_patch4_32", "train", 128, precision, compile=compile) for precision in ("fp32", "bf16")]


def matmul_peak(precision: Precision, size: int = 2048, seconds: float = 1.0) -> float:
    """Dense size×size matmul throughput in GFLOP/s with the current thread count."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 * _calls_per_second(lambda: a @ b, seconds) / 1e9


def run_case(case: BenchCase, rounds: int = 5, seconds: float = 2.0) -> dict:
    """Time vitlab and Hugging Face on one case; returns a JSON-ready dict with both and their ratio."""
    torch.manual_seed(0)
    overrides = {"img_size": case.img_size} if case.img_size else {}
    model = create_model(case.model, **overrides)
    _randomise(model)
    twin = hugging_face_twin(model)
    images = torch.randn(case.batch_size, model.config.in_chans, *model.config.img_size)
    labels = torch.randint(0, max(model.num_classes, 1), (case.batch_size,))
    flops = _flops_per_image(model, case.mode)
    runner = model if not case.compile else torch.compile(model)
    steps = {
        "vitlab": _step(case, model, lambda x: runner(x), images, labels),
        "hf": _step(case, twin, lambda x: twin(pixel_values=x).logits, images, labels),
    }
    rates = interleaved_rates(steps, rounds, seconds)
    peak = matmul_peak(case.precision)
    results = {}
    for name, per_second in rates.items():
        images_per_second = per_second * case.batch_size
        gflops = images_per_second * flops / 1e9
        results[name] = dict(img_per_s=images_per_second, gflops=gflops, peak_pct=100 * gflops / peak)
    return dict(
        case=asdict(case),
        label=case.label,
        gflop_per_image=flops / 1e9,
        matmul_peak_gflops=peak,
        threads=torch.get_num_threads(),
        vitlab=results["vitlab"],
        hf=results["hf"],
        ratio=results["vitlab"]["img_per_s"] / results["hf"]["img_per_s"],
    )


def hugging_face_twin(model: VisionTransformer) -> nn.Module:
    """A transformers ViTForImageClassification carrying exactly `model`'s weights."""
    try:
        from transformers import ViTForImageClassification
    except ImportError:
        raise VitlabError("the benchmark compares against Hugging Face: pip install 'vitlab[hf]' (transformers)") from None
    from vitlab.checkpoints.hf import save_hf

    with tempfile.TemporaryDirectory() as folder:  # through the files, as a user would move the weights
        save_hf(model, Path(folder))
        twin = ViTForImageClassification.from_pretrained(folder, attn_implementation="sdpa")
    return twin


def _randomise(model: nn.Module) -> None:
    """Non-zero weights everywhere (a zero head would make the comparison trivially cheap for neither)."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim > 1:
                param.normal_(0.0, 0.02)


def _step(case: BenchCase, module: nn.Module, forward: Callable, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    mixed = autocast(case.precision, "cpu")
    if case.mode == "inference":
        module.eval()

        def infer() -> None:
            with torch.inference_mode(), mixed:
                forward(images)

        return infer
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, weight_decay=0.05)

    def train() -> None:
        with mixed:
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train


def _flops_per_image(model: VisionTransformer, mode: Mode) -> float:
    images = torch.randn(1, model.config.in_chans, *model.config.img_size)
    counter = FlopCounterMode(display=False)
    with counter:  # with autograd on: the counter does not see the fused inference kernels
        output = model(images)
        if mode == "train":
            output.sum().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _calls_per_second(fn: Callable[[], object], seconds: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
        fn()
        calls += 1
    return calls / elapsed


def interleaved_rates(steps: dict[str, Callable[[], None]], rounds: int, seconds: float) -> dict[str, float]:
    """Median calls/s per step over `rounds`, the order flipping each round."""
    for step in steps.values():  # warm-up: allocator, oneDNN primitives, compilation
        for _ in range(3):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            samples[name].append(_calls_per_second(steps[name], seconds))
    return {name: statistics.median(values) for name, values in samples.items()}
