"""Does the data pipeline starve the model? End-to-end training steps vs model-only steps, same run.

End to end: index the in-memory uint8 dataset, convert, augment, normalise, mix, then the training step, as
`vitlab train` does. Model only: the same training step on one fixed, already prepared batch. Both are timed
in alternating rounds; the ratio end-to-end / model-only should be close to 1.
"""

from __future__ import annotations

from typing import Any

from vitlab.benchmarking.throughput import interleaved_rates
from vitlab.training.distributed import World
from vitlab.training.loop import DataOptions, TrainingRun
from vitlab.training.recipe import TrainConfig


def pipeline_rates(config: TrainConfig, rounds: int = 3, seconds: float = 2.0) -> dict[str, Any]:
    """img/s of the full training step and of the model-only step for `config`, and their ratio."""
    run = TrainingRun(config, World(), DataOptions(), progress=False)
    batches = run.epoch_order(0)
    position = {"i": 0}

    def end_to_end() -> None:
        indices = batches[position["i"] % len(batches)]
        position["i"] += 1
        run.train_step(run.train_set.images[indices], run.train_set.labels[indices])

    fixed = batches[0]
    inputs, targets = run.prepare_batch(run.train_set.images[fixed], run.train_set.labels[fixed])

    def model_only() -> None:
        run.optimise(inputs, targets)

    rates = interleaved_rates({"end_to_end": end_to_end, "model_only": model_only}, rounds, seconds)
    batch = config.batch_size
    return dict(
        data=config.data,
        model=config.model,
        batch_size=batch,
        precision=config.precision,
        end_to_end_img_per_s=rates["end_to_end"] * batch,
        model_only_img_per_s=rates["model_only"] * batch,
        ratio=rates["end_to_end"] / rates["model_only"],
    )
