"""Seeded, stratified hold-out splits that come out the same on every machine and numpy version.

numpy's `Generator` makes no promise that a seed gives the same stream in every release, and a split that
moves under you silently mixes validation into training between runs. The order here comes from a fixed integer
hash (splitmix64) of (seed, salt, index) instead: same seed → same split, anywhere; another seed → another split.
"""

from __future__ import annotations

import numpy as np

from vitlab.errors import VitlabError

_MASK = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _keys(n: int, seed: int, salt: int) -> np.ndarray:
    start = np.array([(seed * 0x9E3779B97F4A7C15 + salt) & _MASK], dtype=np.uint64)
    base = _mix(start)
    with np.errstate(over="ignore"):
        return _mix(np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base)


def _classes_in_hashed_order(labels: np.ndarray, seed: int, salt: int) -> list[tuple[int, np.ndarray]]:
    """(label, indices of that class in the seeded hashed order) for every class, in label order."""
    order = np.argsort(_keys(len(labels), int(seed), salt), kind="stable")
    return [(int(label), order[labels[order] == label]) for label in np.unique(labels)]


def check_fraction(val_fraction: float) -> float:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise VitlabError(f"--val-fraction must be a number in [0, 1) (the share of train held out for val), got {val_fraction!r}")
    return float(val_fraction)


def stratified_split(labels: np.ndarray, fraction: float, seed: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out), each sorted: about `fraction` of every class held out, at least one of each class
    kept; a class with two or more members gives at least one to the hold-out when `fraction` > 0."""
    labels = np.asarray(labels)
    held: list[np.ndarray] = []
    for _, members in _classes_in_hashed_order(labels, seed, salt):
        count = int(np.floor(fraction * len(members) + 0.5))
        if fraction > 0 and len(members) >= 2:
            count = max(count, 1)
        count = min(count, len(members) - 1)
        held.append(members[:count])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out.astype(np.int64)


def per_class_sample(labels: np.ndarray, per_class: int, seed: int, salt: int = 0) -> np.ndarray:
    """Sorted indices of `per_class` members of every class, chosen by the same seeded hash (few-shot sets, small
    training subsets); a class with fewer members is an error naming it."""
    labels = np.asarray(labels)
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise VitlabError(f"images per class must be a positive integer, got {per_class!r}")
    chosen: list[np.ndarray] = []
    for label, members in _classes_in_hashed_order(labels, seed, salt):
        if len(members) < per_class:
            raise VitlabError(f"class {label} has only {len(members)} images, fewer than the {per_class} per class asked for")
        chosen.append(members[:per_class])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
