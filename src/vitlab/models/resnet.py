"""The hybrid's CNN stem: a BiT-style ResNet-v2 whose stride-16 feature map is cut into 1×1 "patches".

Paper Section 3.1, "Hybrid Architecture": the patch embedding E is applied to patches of a CNN feature map;
with 1×1 patches each spatial position of the map becomes a token. The R50+ViT-B/16 of the paper uses
ResNet-50 with two changes taken from BiT: weight-standardised convolutions and GroupNorm instead of batch
norm, and its stages (3, 4, 9) (the fourth stage dropped, the third deepened) so that the output stride is 16.

The structure and names are those of timm's `vit_base_r50_s16_384`, so its checkpoints (ported from Google's
`vit_jax` R50+ViT-B_16) load as they are:

    patch_embed.backbone.stem.{conv, norm, pool}                  7×7/2 conv, GN+ReLU, 3×3/2 max pool
    patch_embed.backbone.stages.{s}.blocks.{b}.{conv1, norm1, conv2, norm2, conv3, norm3}
    patch_embed.backbone.stages.{s}.blocks.0.downsample.{conv, norm}   1×1 projection of the shortcut
    patch_embed.proj                                              1×1 conv, the paper's E (with bias)

The blocks are the *non*-pre-activation bottleneck (conv → GN → ReLU, ..., GN, add, ReLU) with the stride on
the 3×3 conv, which is what Google's hybrid uses (`vit_jax/models_resnet.py`), not BiT's pre-activation one.
No convolution of the backbone has a bias.

Numerical details follow timm's port of the JAX weights (`timm/models/vision_transformer_hybrid.py`,
`_resnetv2`; `timm/layers/std_conv.py`, `StdConv2dSame`; `timm/layers/norm_act.py`, `GroupNormAct`):

- weight standardisation per output channel, w' = (w − mean) / sqrt(var + 1e-8), biased variance (vit_jax
  itself writes (w − mean) / (std + 1e-5); the two agree to well under 1e-3 for trained weights);
- TensorFlow 'SAME' padding everywhere: asymmetric (more on the bottom/right) for strided convs and for the
  max pool, whose padding is −inf so that it never wins the max;
- GroupNorm with 32 groups and eps 1e-5 (timm's default; flax's GroupNorm uses 1e-6).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitlab.errors import VitlabError
from vitlab.models.layers import check_image_batch

STD_CONV_EPS = 1e-8  # added to the variance of each output channel's weights (timm's value for these weights)
GROUP_NORM_EPS = 1e-5
GROUP_NORM_GROUPS = 32
STEM_WIDTH = 64
STEM_STRIDE = 4  # 7×7/2 conv, then 3×3/2 max pool


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding along one axis: the output has ceil(size / stride) positions.

    Returns (before, after); when the total is odd the extra pixel goes after, as in TensorFlow/JAX.
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel_size: int, stride: int, value: float = 0.0) -> Tensor:
    """Pad an NCHW tensor so that a (kernel_size, stride) window gives TensorFlow's 'SAME' output size."""
    top, bottom = same_padding(x.shape[-2], kernel_size, stride)
    left, right = same_padding(x.shape[-1], kernel_size, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class StdConv2d(nn.Conv2d):
    """Convolution with weight standardisation (Qiao et al. 2019) and TensorFlow 'SAME' padding, no bias.

    The stored `weight` is the raw parameter; each forward standardises it per output channel over
    (in_channels, kh, kw) to zero mean and unit variance before convolving.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, eps: float = STD_CONV_EPS
    ):
        # With stride 1 and an odd kernel 'SAME' is symmetric and fixed, so nn.Conv2d pads; otherwise the
        # (possibly asymmetric) padding depends on the input size and is applied in forward.
        self.dynamic_pad = not (stride == 1 and kernel_size % 2 == 1)
        padding = 0 if self.dynamic_pad else (kernel_size - 1) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.eps = eps

    def standardized_weight(self) -> Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=0)
        return (self.weight - mean) * torch.rsqrt(var + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic_pad:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardized_weight(), None, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}, padding=SAME"


class MaxPool2dSame(nn.Module):
    """Max pooling with TensorFlow 'SAME' padding (padded with −inf)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = pad_same(x, self.kernel_size, self.stride, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS)


class Stem(nn.Module):
    """Root of the ResNet: 7×7/2 conv, GroupNorm, ReLU, 3×3/2 max pool (stride 4 in all)."""

    def __init__(self, in_chans: int, width: int = STEM_WIDTH):
        super().__init__()
        self.conv = StdConv2d(in_chans, width, kernel_size=7, stride=2)
        self.norm = group_norm(width)
        self.pool = MaxPool2dSame(kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class Downsample(nn.Module):
    """Projection shortcut: strided 1×1 conv and GroupNorm (no activation)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = StdConv2d(in_channels, out_channels, kernel_size=1, stride=stride)
        self.norm = group_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """Post-activation bottleneck: 1×1 → 3×3 (strided) → 1×1 convs, each followed by GroupNorm; ReLU after
    the first two norms and after adding the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, project: bool = False):
        super().__init__()
        mid = out_channels // 4
        self.downsample = Downsample(in_channels, out_channels, stride) if project else None
        self.conv1 = StdConv2d(in_channels, mid, kernel_size=1)
        self.norm1 = group_norm(mid)
        self.conv2 = StdConv2d(mid, mid, kernel_size=3, stride=stride)
        self.norm2 = group_norm(mid)
        self.conv3 = StdConv2d(mid, out_channels, kernel_size=1)
        self.norm3 = group_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + shortcut)


class ResNetStage(nn.Module):
    """`depth` bottlenecks; the first one changes width (and stride) and so has a projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, stride: int):
        super().__init__()
        self.blocks = nn.Sequential(Bottleneck(in_channels, out_channels, stride, project=True))
        for _ in range(1, depth):
            self.blocks.append(Bottleneck(out_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class ResNetV2(nn.Module):
    """The hybrid's ResNet without head: stem, then stages of bottlenecks; stage i has output width 256·2^i.

    The first stage keeps the resolution, each later one halves it, so the output stride is 4·2^(stages−1)
    (16 for the paper's three stages). With no stages the stem alone is the backbone (stride 4, 64 channels).
    """

    def __init__(self, layers: tuple[int, ...], in_chans: int = 3, width: int = STEM_WIDTH):
        super().__init__()
        if any(int(depth) < 1 for depth in layers):
            raise VitlabError(f"every ResNet stage needs at least one block, got hybrid_layers={tuple(layers)}")
        self.layers = tuple(int(depth) for depth in layers)
        self.stem = Stem(in_chans, width)
        self.stages = nn.Sequential()
        channels, stride = width, STEM_STRIDE
        for i, depth in enumerate(self.layers):
            out_channels = 4 * width * 2**i
            stage_stride = 1 if i == 0 else 2
            self.stages.add_module(str(i), ResNetStage(channels, out_channels, depth, stage_stride))
            channels, stride = out_channels, stride * stage_stride
        self.num_features = channels
        self.stride = stride
        self.init_weights()

    def init_weights(self) -> None:
        """He-normal convs (their scale is irrelevant under weight standardisation), unit/zero GroupNorms, and
        each block's last GroupNorm scale zeroed so every residual block starts as the identity (as vit_jax's
        `gn3` with `scale_init=zeros`)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.norm3.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


def backbone_stride(layers: tuple[int, ...]) -> int:
    """Output stride of a ResNetV2 with these stage depths: 4 from the stem, ×2 for every stage after the first."""
    return STEM_STRIDE * 2 ** max(len(layers) - 1, 0)


class HybridEmbed(nn.Module):
    """CNN feature map → tokens: ResNet backbone, then a 1×1 conv to D per position (paper's 1×1 patches).

    `patch_size` is the backbone's output stride (16 for stages (3, 4, 9)): each token stands for a 16×16
    region of the image, like a ViT-B/16 patch, and the grid is img_size // 16.
    """

    def __init__(
        self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, layers: tuple[int, ...]
    ):
        super().__init__()
        layers = tuple(int(depth) for depth in layers)
        stride = backbone_stride(layers)
        if patch_size != stride:
            raise VitlabError(
                f"hybrid_layers={layers} give a ResNet of output stride {stride} (4 from the stem, x2 per stage after "
                f"the first), but patch_size is {patch_size}: a hybrid's patch_size must equal that stride, "
                f"so set patch_size={stride} or change the number of stages"
            )
        if img_size[0] % stride or img_size[1] % stride:
            raise VitlabError(
                f"img_size {img_size[0]}x{img_size[1]} is not a multiple of the hybrid's stride {stride}: "
                f"use a size divisible by {stride}"
            )
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.in_chans = in_chans
        self.patch_size = stride
        self.grid_size = (self.img_size[0] // stride, self.img_size[1] // stride)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.backbone = ResNetV2(layers, in_chans)
        self.proj = nn.Conv2d(self.backbone.num_features, embed_dim, kernel_size=1, stride=1)

    def forward(self, images: Tensor) -> Tensor:
        check_image_batch(images, self.img_size, self.in_chans)
        return self.proj(self.backbone(images)).flatten(2).transpose(1, 2)
