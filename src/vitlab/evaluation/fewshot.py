"""Few-shot linear evaluation (paper Section 4.1): a closed-form ridge probe on frozen features.

A few labelled images per class are taken from the training split; their features are standardised (mean and
standard deviation over those images, plus 1e-5), a constant bias feature of 100 is appended (so the bias is
all but unregularised), and the weights come from regularised least squares onto {-1, 1}^K targets:

    primal (D ≤ N):  W = (XᵀX + λI)⁻¹ XᵀY        dual (D > N):  W = Xᵀ(XXᵀ + λI)⁻¹ Y

with λ = 2¹⁰, in float64; the two are the same solution, the smaller system is solved. Top-1 of the argmax of
XW on the evaluation split is reported per shot count, over several seeds of the few-shot sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from vitlab.data.datasets import has_test_split
from vitlab.data.splits import per_class_sample
from vitlab.errors import VitlabError
from vitlab.evaluation.feature_cache import DatasetSpec, FeatureExtractor

SHOTS = (1, 5, 10, 25)
L2 = 2.0**10
BIAS = 100.0
STD_EPS = 1e-5
_SAMPLE_SALT = 0xF5  # few-shot samples drawn independently of the val hold-out made with the same seed

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class RidgeProbe:
    """A fitted probe: standardise with `mean`/`std`, append `bias`, multiply by `weights` (D + 1, K)."""

    mean: np.ndarray
    std: np.ndarray
    bias: float
    weights: np.ndarray
    form: str  # "primal" or "dual", whichever system was solved


def ridge_fit(
    features: ArrayLike,
    labels: ArrayLike,
    num_classes: int,
    l2: float = L2,
    bias: float = BIAS,
    form: str | None = None,
) -> RidgeProbe:
    """Fit the few-shot ridge probe; `form` forces "primal" or "dual" (default: the smaller system)."""
    x = _float64(features)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (len(x),):
        raise VitlabError(f"ridge_fit needs features (N, D) and labels (N,), got {x.shape} and {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise VitlabError(f"ridge_fit: labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    mean = x.mean(axis=0)
    std = x.std(axis=0) + STD_EPS
    design = _design(x, mean, std, bias)
    targets = 2.0 * np.eye(num_classes)[y] - 1.0
    count, dim = design.shape
    form = form or ("primal" if dim <= count else "dual")
    if form == "primal":
        weights = np.linalg.solve(design.T @ design + l2 * np.eye(dim), design.T @ targets)
    elif form == "dual":
        weights = design.T @ np.linalg.solve(design @ design.T + l2 * np.eye(count), targets)
    else:
        raise ValueError(f"form must be 'primal' or 'dual', got {form!r}")
    return RidgeProbe(mean, std, float(bias), weights, form)


def ridge_scores(probe: RidgeProbe, features: ArrayLike) -> np.ndarray:
    """Class scores (N, K) of the probe on `features`."""
    return _design(_float64(features), probe.mean, probe.std, probe.bias) @ probe.weights


def ridge_predict(probe: RidgeProbe, features: ArrayLike) -> np.ndarray:
    """Predicted class (N,) of the probe on `features`."""
    return ridge_scores(probe, features).argmax(axis=1)


def _float64(features: ArrayLike) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    return np.asarray(features, dtype=np.float64)


def _design(x: np.ndarray, mean: np.ndarray, std: np.ndarray, bias: float) -> np.ndarray:
    standardised = (x - mean) / std
    return np.concatenate([standardised, np.full((len(x), 1), bias)], axis=1)


# --- over shot counts and seeds ------------------------------------------------------------------------------


@dataclass
class ShotResult:
    shots: int
    mean: float  # top-1 as fractions in [0, 1]
    std: float  # sample standard deviation over seeds (0 for one seed)
    min: float
    max: float
    per_seed: list[float]


@dataclass
class FewShotResult:
    results: list[ShotResult]
    seeds: int
    l2: float
    num_classes: int
    feature_dim: int
    num_train_images: int  # the pool the few-shot samples come from
    num_eval_images: int
    train_split: str | None = None  # set by evaluate_fewshot
    eval_split: str | None = None
    from_cache: bool | None = None  # whether both feature sets were read from the cache

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_shots(text: str) -> list[int]:
    """`"1,5,10,25"` → [1, 5, 10, 25]; a VitlabError naming the flag otherwise."""
    try:
        shots = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        shots = []
    if not shots or any(s < 1 for s in shots):
        raise VitlabError(f"--shots {text!r}: give positive integers separated by commas, e.g. --shots 1,5,10,25")
    return sorted(set(shots))


def check_shots(shots: Sequence[int], labels: ArrayLike, classes: Sequence[str], where: str) -> None:
    """Every class of `labels` must have at least max(shots) images (and every class must appear)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    smallest = int(counts.argmin())
    if counts[smallest] < max(shots):
        raise VitlabError(
            f"--shots {max(shots)} is more than the {counts[smallest]} images of class {classes[smallest]!r}, the "
            f"smallest class in {where}; use shot counts of at most {counts[smallest]}"
        )


def check_seeds(seeds: int) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise VitlabError(f"--seeds must be a positive integer, got {seeds!r}")


def fewshot(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    eval_features: ArrayLike,
    eval_labels: ArrayLike,
    num_classes: int,
    *,
    shots: Sequence[int] = SHOTS,
    seeds: int = 3,
    l2: float = L2,
) -> FewShotResult:
    """Top-1 on the evaluation features of ridge probes fitted on `shots` images per class of the training
    features, for seeds 0 .. seeds-1 of the per-class sample."""
    check_seeds(seeds)
    train_x, eval_x = _float64(train_features), _float64(eval_features)
    train_y, eval_y = np.asarray(train_labels, dtype=np.int64), np.asarray(eval_labels, dtype=np.int64)
    results = []
    for count in shots:
        per_seed = []
        for seed in range(seeds):
            index = per_class_sample(train_y, count, seed, salt=_SAMPLE_SALT)
            probe = ridge_fit(train_x[index], train_y[index], num_classes, l2=l2)
            per_seed.append(float((ridge_predict(probe, eval_x) == eval_y).mean()))
        spread = float(np.std(per_seed, ddof=1)) if seeds > 1 else 0.0
        results.append(ShotResult(count, float(np.mean(per_seed)), spread, min(per_seed), max(per_seed), per_seed))
    return FewShotResult(results, seeds, float(l2), num_classes, train_x.shape[1], len(train_x), len(eval_x))


def eval_split(data: DatasetSpec) -> str:
    """"test" where the dataset has a test split here (or will, with download), else "val"."""
    return "test" if data.download or has_test_split(data.name, data.data_dir) else "val"


def evaluate_fewshot(
    extractor: FeatureExtractor,
    train: DatasetSpec,
    evaluation: DatasetSpec,
    *,
    shots: Sequence[int] = SHOTS,
    seeds: int = 3,
    l2: float = L2,
) -> FewShotResult:
    """`fewshot` on the checkpoint's pre-logits features of `train` (the few-shot pool) and `evaluation`,
    each computed once per checkpoint and split (see `FeatureExtractor`). Shot counts above the smallest
    training class are refused before any feature is computed."""
    if extractor.pool != "pre_logits":
        raise VitlabError(f"few-shot evaluation uses pooled pre-logits features, not {extractor.pool!r}")
    check_seeds(seeds)
    where = f"{train.name} {train.split}"
    pool = extractor.features(train, check=lambda labels, classes: check_shots(shots, labels, classes, where))
    test = extractor.features(evaluation)
    if test.classes != pool.classes:
        raise VitlabError(f"{evaluation.name}: the {evaluation.split} split has other classes than the {train.split} "
                          f"split ({len(test.classes)} vs {len(pool.classes)})")
    result = fewshot(pool.features, pool.labels, test.features, test.labels, len(pool.classes),
                     shots=shots, seeds=seeds, l2=l2)
    return replace(result, train_split=pool.split, eval_split=test.split, from_cache=pool.cached and test.cached)
