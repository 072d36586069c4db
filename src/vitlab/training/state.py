"""The resumable training state (`state.pt`), random-number-generator state, and the per-epoch metrics log.

`state.pt` is written atomically (in full under a temporary name in the run folder, flushed, then moved over
the old one with os.replace, via `checkpoints.files.write_files`), so a crash mid-save leaves the previous
state intact. It holds only tensors and plain Python values (dicts, lists, tuples, str, numbers, None):
`torch.load(weights_only=True)` reads it, and loading a run folder runs no pickled code.

Exact resume needs every source of randomness back where it was: `capture_rng` saves Python's `random`,
numpy's global generator, torch's CPU generator, every CUDA device's generator and any named
`torch.Generator`s (the augmentation's, the mixing one); `restore_rng` puts them back.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vitlab.checkpoints.files import write_files
from vitlab.errors import VitlabError
from vitlab.training.optim import unwrap_model

STATE = "state.pt"
METRICS = "metrics.jsonl"
STATE_FORMAT = "vitlab-train-state"
STATE_VERSION = 1


# --- random number generators ---------------------------------------------------------------------------


def seed_all(seed: int) -> None:
    """Seed Python's `random`, numpy's global generator and torch's (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The state of every global generator and of the named `generators`, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }
    return states


def restore_rng(states: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Put back what `capture_rng` saved; a named generator missing from `states` is an error."""
    random.setstate(_tuples(states["python"]))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for device, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
    saved = states.get("generators") or {}
    for name, gen in (generators or {}).items():
        if name not in saved:
            known = ", ".join(saved) or "none"
            raise VitlabError(f"the saved training state has no random state for {name!r} (saved: {known})")
        gen.set_state(saved[name])


def _tuples(value: Any) -> Any:
    """random.setstate wants tuples all the way down."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# --- state.pt -------------------------------------------------------------------------------------------


def save_state(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: Any = None,
    scaler: Any = None,
    step: int = 0,
    epoch: int = 0,
    rng_states: Mapping[str, Any] | None = None,
    metrics_so_far: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `run_dir/state.pt` atomically; returns its path.

    `step` is the number of optimiser steps taken, `epoch` the number of whole epochs done (both count what
    is finished, so the resumed run starts at them). `ema` and `scaler` are anything with `state_dict()`
    (ModelEma, torch.amp.GradScaler) or None; `rng_states` comes from `capture_rng`; `metrics_so_far` are the
    metrics.jsonl records so far; `extra` holds any other plain values (the config, a sampler position).
    """
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "step": int(step),
        "epoch": int(epoch),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": dict(rng_states) if rng_states is not None else None,
        "metrics": list(metrics_so_far or []),
        "extra": dict(extra or {}),
    }
    _check_plain(payload, "state")
    run_dir = Path(run_dir)
    write_files(run_dir, {STATE: lambda path: torch.save(payload, path)})
    return run_dir / STATE


def read_state(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The contents of `run_dir/state.pt` (weights_only: no pickled code runs); a VitlabError if unusable."""
    run_dir = Path(run_dir)
    path = run_dir / STATE if run_dir.is_dir() or not run_dir.exists() else run_dir
    if not path.is_file():
        raise VitlabError(
            f"{run_dir}: no {STATE} here, so there is nothing to resume (not a run folder, or the run saved no "
            "state yet); start a new run without --resume"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load fails in many ways on a damaged file
        raise VitlabError(f"{path}: corrupt or unreadable training state ({type(error).__name__}: {error}); "
                          "start a new run without --resume") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise VitlabError(f"{path}: not a vitlab training state")
    if not isinstance(state.get("version"), int) or state["version"] > STATE_VERSION:
        raise VitlabError(f"{path}: training state version {state.get('version')!r} is newer than this vitlab reads "
                          f"(≤ {STATE_VERSION}); upgrade vitlab")
    return state


def load_state(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: Any = None,
    scaler: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_random: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Restore what `save_state` wrote into freshly built objects; returns {"step", "epoch", "metrics", "extra"}.

    The model (unwrapped from DDP/compile), optimiser, EMA and scaler get their state back, and, unless
    `restore_random` is False, every global generator and the named `generators` too (see `restore_rng`).
    Build the objects exactly as the saved run did (same model config, same parameter groups).
    """
    state = read_state(run_dir, map_location)
    where = Path(run_dir)
    try:
        unwrap_model(model).load_state_dict(state["model"])
    except RuntimeError as error:
        raise VitlabError(f"{where}: the saved model does not match the one built now (different --model or "
                          f"options than the run used?): {str(error).splitlines()[0]}") from None
    for name, target in (("optimizer", optimizer), ("ema", ema), ("scaler", scaler)):
        if target is None:
            continue
        if state.get(name) is None:
            raise VitlabError(f"{where}: the saved run had no {name} state; resume it with the options it was started with")
        try:
            target.load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError) as error:
            raise VitlabError(f"{where}: the saved {name} state does not fit this run ({error}); resume with the "
                              "options the run was started with") from None
    if restore_random:
        if state.get("rng") is None:
            raise VitlabError(f"{where}: the saved state has no random-generator state, so it cannot resume exactly")
        restore_rng(state["rng"], generators)
    return {"step": state["step"], "epoch": state["epoch"], "metrics": state["metrics"], "extra": state["extra"]}


_PLAIN = (Tensor, str, int, float, bool, type(None), bytes, torch.Size, torch.dtype, torch.device)


def _check_plain(value: Any, where: str) -> None:
    """Refuse, before writing, anything torch.load(weights_only=True) would refuse to read."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"{where} is a {type(value).__name__}; the training state holds only tensors and plain values")


# --- metrics.jsonl --------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def append_metrics(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Append `record` as one JSON line to run_dir/metrics.jsonl, flushed and fsynced before returning."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(_json_value(dict(record)), allow_nan=False)
    with open(run_dir / METRICS, "a", encoding="utf-8") as stream:
        stream.write(line + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def write_metrics(run_dir: str | Path, records: list[Mapping[str, Any]]) -> None:
    """Replace metrics.jsonl with `records`, atomically: a resumed run first writes back the records its
    state.pt knows, dropping any line appended after that state was saved."""
    text = "".join(json.dumps(_json_value(dict(r)), allow_nan=False) + "\n" for r in records)
    write_files(Path(run_dir), {METRICS: lambda path: path.write_text(text, encoding="utf-8")})


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records in run_dir/metrics.jsonl ([] when there is none). A last line cut short by a crash
    (no newline, not valid JSON) is ignored; a bad line anywhere else is a VitlabError."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the torn tail of an interrupted append
                break
            raise VitlabError(f"{path}:{number}: not a JSON line; the metrics log is damaged") from None
        if not isinstance(record, dict):
            raise VitlabError(f"{path}:{number}: expected a JSON object per line")
        records.append(record)
    return records
