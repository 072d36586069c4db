"""Batched augmentation (kornia) and mixup/cutmix: shapes, determinism, resumability, the mixing maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitlab.training.augment import BatchAugment, apply_mix, mix, sample_mix, smooth_one_hot, soft_target_cross_entropy
from vitlab.training.recipe import TrainConfig

CIFAR_LIKE = dict(crop_padding=4, hflip=True, randaugment=(2, 9), random_erasing=0.25, group_size=8)


def images(batch=16, chans=3, size=32, seed=0):
    return torch.rand(batch, chans, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("chans", "size_in", "size_out", "options"),
    [
        (3, 32, 32, CIFAR_LIKE),
        (3, 40, 32, dict(crop_scale=(0.08, 1.0), hflip=True, randaugment=(2, 9), random_erasing=0.25)),
        (1, 28, 28, dict(rotate_degrees=10, translate=0.1, randaugment=(2, 9))),  # grey: no colour op
        (1, 8, 16, dict(rotate_degrees=10, translate=0.125)),  # resized when there is no crop
        (1, 8, 8, {}),
    ],
)
def test_output_shape_dtype_and_range(chans, size_in, size_out, options):
    augment = BatchAugment(size_out, in_chans=chans, **options)
    out = augment(images(16, chans, size_in))
    assert out.shape == (16, chans, size_out, size_out) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_batches_and_global_rng_untouched():
    x = images()
    a, b, c = (BatchAugment(32, seed=s, **CIFAR_LIKE) for s in (1, 1, 2))
    before = torch.get_rng_state()
    first = a(x)
    assert torch.equal(torch.get_rng_state(), before)  # augmentation draws from its own generator only
    torch.manual_seed(1234)  # ... and does not depend on the global one
    assert torch.equal(b(x), first)
    assert not torch.equal(c(x), first)
    assert not torch.equal(a(x), first)  # the stream moves on


def test_state_dict_resumes_the_stream():
    x = images()
    straight = BatchAugment(32, seed=3, **CIFAR_LIKE)
    straight(x)
    expected = straight(x)
    first = BatchAugment(32, seed=3, **CIFAR_LIKE)
    first(x)
    resumed = BatchAugment(32, seed=99, **CIFAR_LIKE)
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed(x), expected)


def test_no_hflip_means_no_flip():
    x = images(64)
    assert torch.equal(BatchAugment(32, hflip=False)(x), x)
    flipped = BatchAugment(32, hflip=True)(x)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_from_config_uses_the_preset():
    config = TrainConfig.resolve(data="mnist")
    augment = BatchAugment.from_config(config, 28, in_chans=1, seed=0)
    assert augment.randaugment is None and augment.crop is None
    assert not any(type(step).__name__ == "RandomHorizontalFlip" for step in augment.steps)


# --- mixup / cutmix ----------------------------------------------------------------------------------------


def test_smooth_one_hot():
    targets = smooth_one_hot(torch.tensor([0, 2]), 4, 0.1)
    assert torch.allclose(targets.sum(1), torch.ones(2))
    assert targets[0, 0] == pytest.approx(0.925) and targets[0, 1] == pytest.approx(0.025)


def test_mixup_mixes_images_and_targets_by_lam():
    x, labels = images(8), torch.arange(8) % 4
    gen = torch.Generator().manual_seed(0)
    params = sample_mix(8, 32, 32, mixup_alpha=0.8, cutmix_alpha=0.0, generator=gen)
    assert params.kind == "mixup" and 0 < params.lam < 1
    mixed, targets = apply_mix(x, labels, params, 4, label_smoothing=0.1)
    lam, perm = params.lam, params.perm
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    smooth = smooth_one_hot(labels, 4, 0.1)
    assert torch.allclose(targets, lam * smooth + (1 - lam) * smooth[perm])
    assert torch.allclose(targets.sum(1), torch.ones(8))


def test_cutmix_box_area_matches_lam():
    batch, h, w = 8, 12, 20
    x = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 3, h, w).contiguous()
    labels = torch.arange(batch) % 5
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        params = sample_mix(batch, h, w, mixup_alpha=0.0, cutmix_alpha=1.0, generator=gen)
        assert params.kind == "cutmix"
        mixed, targets = apply_mix(x, labels, params, 5, label_smoothing=0.0)
        y0, y1, x0, x1 = params.box
        assert params.lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (h * w))
        for i in range(batch):
            j = int(params.perm[i])
            from_other = (mixed[i] == j).float().mean() if j != i else torch.tensor(1 - params.lam)
            assert from_other.item() == pytest.approx(1 - params.lam)
        assert torch.allclose(targets.sum(1), torch.ones(batch))
        assert torch.equal(x[:, 0, 0, 0], torch.arange(batch, dtype=torch.float32))  # input untouched


def test_mix_switches_between_mixup_and_cutmix_and_respects_prob():
    gen = torch.Generator().manual_seed(0)
    kinds = [sample_mix(4, 8, 8, 0.8, 1.0, prob=1.0, generator=gen).kind for _ in range(200)]
    assert 60 < kinds.count("cutmix") < 140 and kinds.count("none") == 0
    assert {sample_mix(4, 8, 8, 0.8, 1.0, prob=0.0, generator=gen).kind for _ in range(20)} == {"none"}
    x, labels = images(4), torch.tensor([0, 1, 2, 3])
    out, targets = mix(x, labels, 4, prob=0.0, label_smoothing=0.1, generator=gen)
    assert torch.equal(out, x) and torch.allclose(targets, smooth_one_hot(labels, 4, 0.1))


def test_mix_is_deterministic_under_a_generator():
    x, labels = images(8), torch.arange(8) % 4
    a = mix(x, labels, 4, generator=torch.Generator().manual_seed(5))
    b = mix(x, labels, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_soft_target_cross_entropy_matches_label_smoothing():
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = soft_target_cross_entropy(logits, smooth_one_hot(labels, 4, 0.1))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-6)
    assert soft_target_cross_entropy(logits.bfloat16(), smooth_one_hot(labels, 4)).dtype == torch.float32
