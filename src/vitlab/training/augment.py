"""Batched training augmentation on (B, C, H, W) float tensors in [0, 1], on any device, and mixup/cutmix.

What comes from kornia and why: kornia (0.9) augments whole batches as tensor operations on the device the
images are on, so augmentation costs a few milliseconds per batch instead of needing data-loader workers on
a 2-core machine; vitlab uses its RandomResizedCrop, RandomCrop (padded shifts), RandomHorizontalFlip,
RandomAffine (small rotations and shifts for digits), RandAugment and RandomErasing. Mixup and cutmix are
written here (a few lines) because they must also mix the labels, with label smoothing, in one place.

Three things kornia does differently from timm's per-image pipeline, and what vitlab does about them:
- kornia's RandAugment draws its operations once per call, for the whole batch; `BatchAugment` calls it
  on groups of `group_size` images so that a batch sees many different operation pairs.
- kornia's RandAugment needs 3 channels for its colour (saturation) operation; for grey images vitlab
  passes the default policy without it.
- kornia draws from torch's global generator and takes no `generator=`; `BatchAugment` runs it inside
  `torch.random.fork_rng` with the global CPU state swapped for its own `torch.Generator`, so augmentation
  is reproducible from `seed` alone, independent of dropout and everything else drawing random numbers,
  and `state_dict()` / `load_state_dict()` resume it exactly. (kornia samples its parameters on the CPU
  even for CUDA images; anything it might draw on a GPU comes from the GPU generator, which the training
  loop reseeds at every epoch.)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vitlab.errors import VitlabError

if TYPE_CHECKING:
    from vitlab.training.recipe import TrainConfig

# kornia's RandAugment candidates (its default policy), minus "color" (saturation) for grey images.
_RANDAUGMENT_POLICY = [
    ("auto_contrast", 0, 1), ("equalize", 0, 1), ("invert", 0, 1), ("rotate", -30.0, 30.0),
    ("posterize", 4.0, 8.0), ("solarize", 0.0, 1.0), ("solarize_add", 0.0, 0.43), ("color", 0.1, 1.9),
    ("contrast", 0.1, 1.9), ("brightness", 0.1, 1.9), ("sharpness", 0.1, 1.9), ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3), ("translate_x", -0.1, 0.1), ("translate_y", -0.1, 0.1),
]


class BatchAugment:
    """Training augmentation for a batch of images in [0, 1]; returns (B, C, img_size, img_size) in [0, 1].

    In order (DeiT's order, with normalisation left to the caller afterwards): random resized crop
    (`crop_scale`) or a resize to `img_size` when the input has another size; a padded random crop
    (`crop_padding` pixels of zeros each side); horizontal flip (`hflip`, probability 0.5); random rotation
    and shift (`rotate_degrees`, `translate` as a fraction of the size); RandAugment(`randaugment` = (ops,
    magnitude)), drawn per group of `group_size` images; random erasing of one rectangle (area 2-33 %,
    filled with 0) with probability `random_erasing`. With every option off it returns the input itself (resized
    when its size is not `img_size`); it never changes the input in place.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int],
        *,
        in_chans: int = 3,
        crop_scale: tuple[float, float] | None = None,
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        crop_padding: int = 0,
        hflip: bool = False,
        rotate_degrees: float = 0.0,
        translate: float = 0.0,
        randaugment: tuple[int, int] | None = None,
        random_erasing: float = 0.0,
        group_size: int = 32,
        seed: int = 0,
    ):
        import kornia.augmentation as K  # the one place kornia is imported: inference never needs it
        from kornia.augmentation.auto import RandAugment

        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.in_chans = in_chans
        self.group_size = group_size
        self.crop = K.RandomResizedCrop(self.img_size, scale=crop_scale, ratio=crop_ratio) if crop_scale else None
        steps: list[Any] = []
        if crop_padding:
            steps.append(K.RandomCrop(self.img_size, padding=crop_padding))
        if hflip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if rotate_degrees or translate:
            shift = (translate, translate) if translate else None
            steps.append(K.RandomAffine(degrees=rotate_degrees, translate=shift, p=1.0))
        self.steps = steps
        self.randaugment = None
        if randaugment is not None:
            ops, magnitude = randaugment
            policy = [[op] for op in _RANDAUGMENT_POLICY if in_chans == 3 or op[0] != "color"]
            try:
                self.randaugment = RandAugment(n=ops, m=magnitude, policy=policy)
            except ValueError as error:
                raise VitlabError(f"randaugment {list(randaugment)}: {error}") from None
        self.erasing = None
        if random_erasing:  # DeiT/timm's area and aspect ranges; filled with 0 (black) in [0, 1] space
            self.erasing = K.RandomErasing(p=random_erasing, scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value=0.0)
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_config(cls, config: TrainConfig, img_size: int | tuple[int, int], in_chans: int, seed: int) -> BatchAugment:
        """The augmentation a TrainConfig asks for; give each data-parallel rank its own seed (seed + rank)."""
        return cls(
            img_size,
            in_chans=in_chans,
            crop_scale=config.crop_scale,
            crop_padding=config.crop_padding,
            hflip=config.hflip,
            rotate_degrees=config.rotate_degrees,
            translate=config.translate,
            randaugment=config.randaugment,
            random_erasing=config.random_erasing,
            seed=seed,
        )

    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or not images.is_floating_point():
            raise VitlabError(f"augmentation expects a float (B, C, H, W) batch, got {tuple(images.shape)} {images.dtype}")
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.generator.get_state())
            try:
                return self._apply(images)
            finally:
                self.generator.set_state(torch.get_rng_state())

    def _apply(self, x: Tensor) -> Tensor:
        if self.crop is not None:
            x = self.crop(x)
        elif tuple(x.shape[-2:]) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        for step in self.steps:
            x = step(x)
        if self.randaugment is not None:
            x = torch.cat([self.randaugment(group) for group in x.split(self.group_size)])
        if self.erasing is not None:
            x = self.erasing(x)
        return x

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


# --- mixup / cutmix ------------------------------------------------------------------------------------


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """(B, num_classes) float32 targets: smoothing / num_classes everywhere, plus 1 - smoothing on the label."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


@dataclass
class MixParams:
    """One batch's draw: `kind` is "none", "mixup" or "cutmix"; images[i] gets lam of itself and 1 - lam of
    images[perm[i]]; for cutmix, rows y0:y1 and columns x0:x1 come from images[perm] and lam is that box's
    complement as a fraction of the image (exact, after clipping the box to the image)."""

    kind: str
    lam: float = 1.0
    perm: Tensor | None = None
    box: tuple[int, int, int, int] | None = None  # y0, y1, x0, x1


def sample_mix(
    batch: int,
    height: int,
    width: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> MixParams:
    """Draw whether and how to mix a batch, from `generator` (CPU; the global generator when None).

    With probability `prob` the batch is mixed; when both alphas are positive, cutmix is chosen with
    probability `switch_prob` (DeiT: 0.5). lam ~ Beta(alpha, alpha); the batch is paired with a random
    permutation of itself.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0 or not 0.0 <= prob <= 1.0:
        raise VitlabError(f"mix: alphas must be >= 0 and prob in [0, 1]; got {mixup_alpha}, {cutmix_alpha}, {prob}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = random.Random(seed)  # scalar draws (Beta has no torch.Generator path), seeded from `generator`
    if (mixup_alpha == 0 and cutmix_alpha == 0) or rng.random() >= prob:
        return MixParams("none")
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < switch_prob)
    perm = torch.randperm(batch, generator=generator)
    if not use_cutmix:
        return MixParams("mixup", rng.betavariate(mixup_alpha, mixup_alpha), perm)
    lam = rng.betavariate(cutmix_alpha, cutmix_alpha)
    side = math.sqrt(1.0 - lam)  # a box of area (1 - lam) with the image's aspect ratio
    cut_h, cut_w = int(height * side), int(width * side)
    cy, cx = rng.randrange(height), rng.randrange(width)
    y0, x0 = max(cy - cut_h // 2, 0), max(cx - cut_w // 2, 0)
    y1, x1 = min(cy - cut_h // 2 + cut_h, height), min(cx - cut_w // 2 + cut_w, width)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return MixParams("cutmix", lam, perm, (y0, y1, x0, x1))


def apply_mix(
    images: Tensor, labels: Tensor, params: MixParams, num_classes: int, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Images mixed as `params` says (a new tensor; the input is untouched) and their soft targets."""
    targets = smooth_one_hot(labels, num_classes, label_smoothing)
    if params.kind == "none":
        return images, targets
    perm = params.perm.to(images.device)
    lam = params.lam
    if params.kind == "mixup":
        mixed = images.mul(lam).add_(images[perm], alpha=1.0 - lam)
    else:
        y0, y1, x0, x1 = params.box
        mixed = images.clone()
        mixed[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
    return mixed, targets.mul(lam).add_(targets[perm], alpha=1.0 - lam)


def mix(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    label_smoothing: float = 0.1,
    generator: torch.Generator | None = None,
    switch_prob: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Mixup or cutmix a batch (DeiT's batch mode) and return (images, soft targets that sum to 1)."""
    params = sample_mix(images.shape[0], images.shape[-2], images.shape[-1], mixup_alpha, cutmix_alpha, prob,
                        switch_prob, generator)
    return apply_mix(images, labels, params, num_classes, label_smoothing)


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of -sum(targets * log_softmax(logits)); computed in float32 under autocast."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
