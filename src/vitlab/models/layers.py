"""Transformer building blocks shared by the ViT and, later, DETR.

Attention is written once, as a function over already-projected heads, so that ViT's fused-qkv self-attention
and DETR's cross-attention (separate q/k/v projections, positions added to q and k) can both call it. It has
two paths with the same result: PyTorch's fused `scaled_dot_product_attention`, and an exact eager path that
also returns the attention weights for inspection.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitlab.errors import VitlabError

GeluForm = Literal["exact", "tanh"]


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """softmax(q kᵀ / √d) v over heads shaped (batch, heads, tokens, head_dim).

    `key_padding_mask` is (batch, keys), True where a key is padding (DETR's convention). With
    `return_weights` the eager path runs and the (batch, heads, queries, keys) weights come back too; the
    weights are those before dropout.
    """
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = ~key_padding_mask[:, None, None, :]
    if not return_weights and _fused_kernel_wins(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p), None
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # reduced-precision inputs are still summed in fp32 by the kernel
    out = F.dropout(weights, dropout_p) @ v if dropout_p > 0 else weights @ v
    return out, weights if return_weights else None


def _fused_kernel_wins(q: Tensor) -> bool:
    """Whether PyTorch's fused attention is the fast choice for these inputs.

    On CPU its flash kernel is 3-8x slower than the plain matmul-softmax-matmul path for bf16/fp16 inputs
    (as under autocast), forward and backward, at ViT shapes (measured on AVX-512, torch 2.13); in fp32 and
    on GPUs the fused kernel is faster and needs no (tokens x tokens) buffer.
    """
    return q.device.type != "cpu" or q.dtype == torch.float32


class SelfAttention(nn.Module):
    """Multi-head self-attention with q, k and v from one fused projection (paper eq. 5-8).

    `qkv.weight` stacks q, k, v on dim 0, each head-major inside: timm's layout.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise VitlabError(f"embed_dim {dim} is not divisible by num_heads {num_heads}: pick a head count that divides it")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        batch, tokens, dim = x.shape
        q, k, v = linear(x, self.qkv).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        out, weights = attention(q, k, v, dropout_p=drop, return_weights=return_weights)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(linear(out, self.proj)), weights


class Mlp(nn.Module):
    """Two linear layers with GELU between (paper eq. 3)."""

    def __init__(self, dim: int, hidden_dim: int, gelu: GeluForm = "exact", drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        hidden = linear(x, self.fc1, gelu=self.act.approximate)
        return self.drop(linear(self.drop(hidden), self.fc2))


def linear(x: Tensor, layer: nn.Linear, gelu: str | None = None) -> Tensor:
    """`layer(x)`, followed by GELU when `gelu` is given ('none' = exact erf form, 'tanh').

    For CPU inference this is one oneDNN matmul with the bias and GELU as its epilogue (the op
    torch.compile emits on CPU): about 10 % faster than MKL's GEMM at ViT shapes, and the activations are
    written once instead of twice, which matters on CPU, where allocating and touching a fresh
    (tokens x MLP) buffer costs more than computing the GELU. Training takes the plain path: the fused
    kernel has no backward.
    """
    if _ONEDNN_LINEAR is not None and x.device.type == "cpu" and not _needs_grad(x, layer) and not _compiling():
        weight, bias = layer.weight, layer.bias
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        if x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16):
            if gelu is None:
                return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
            return _ONEDNN_LINEAR(x, weight, bias, "gelu", [], gelu)
    out = layer(x)
    return F.gelu(out, approximate=gelu) if gelu is not None else out


def _compiling() -> bool:
    """Under torch.compile, Inductor does this fusion itself (with weights it prepacks)."""
    return torch.compiler.is_compiling()


def _needs_grad(x: Tensor, layer: nn.Linear) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad)


def _onednn_linear_op() -> object | None:
    try:
        return torch.ops.mkldnn._linear_pointwise.default if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability `p`, rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer encoder block: x + MSA(LN(x)), then x + MLP(LN(x)) (paper eq. 2-3)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        eps: float = 1e-6,
        gelu: GeluForm = "exact",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, gelu, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attn(self.norm1(x), return_weights)
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class PatchEmbed(nn.Module):
    """Cut the image into P×P patches and project each linearly (E in paper eq. 1), as one strided conv."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, dim: int):
        super().__init__()
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise VitlabError(
                f"img_size {img_size[0]}x{img_size[1]} is not a multiple of patch_size {patch_size}: "
                f"use a size divisible by {patch_size}"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        check_image_batch(images, self.img_size, self.in_chans)
        return self.proj(images).flatten(2).transpose(1, 2)


def check_image_batch(images: Tensor, img_size: tuple[int, int], in_chans: int) -> None:
    """Fail with a clear message unless `images` is (batch, in_chans, *img_size)."""
    expected = f"(batch, {in_chans}, {img_size[0]}, {img_size[1]})"
    if images.ndim != 4:
        raise VitlabError(f"expected a batch of images shaped {expected}, got a tensor of shape {tuple(images.shape)}")
    if images.shape[1] != in_chans:
        raise VitlabError(
            f"expected {in_chans} channels, got {images.shape[1]} (shape {tuple(images.shape)}): "
            "convert the images (e.g. RGB) or build the model with in_chans set"
        )
    if tuple(images.shape[2:]) != tuple(img_size):
        raise VitlabError(
            f"expected images of {img_size[0]}x{img_size[1]} pixels, got {images.shape[2]}x{images.shape[3]}: "
            "resize the input, or load/build the model with img_size= to resample its position embeddings"
        )
