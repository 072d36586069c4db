"""The Vision Transformer (Dosovitskiy et al. 2020), read top to bottom like Section 3.1 of the paper.

    z0 = [x_class; x_p1 E; ...; x_pN E] + E_pos                 (eq. 1)  patch_embed, cls_token, pos_embed
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                           (eq. 2)  blocks[l].attn
    z_l  = MLP(LN(z'_l)) + z'_l                                 (eq. 3)  blocks[l].mlp
    y    = LN(z_L^0)                                            (eq. 4)  norm, then the class token
    logits = head(pre_logits(y))                                         tanh pre-logits only if asked

State-dict names are timm's, so timm checkpoints load without renaming. The model contract is timm's too:
`forward_features`, `forward_head(x, pre_logits=)`, `reset_classifier`, `no_weight_decay`, plus
`forward_intermediates` for every block's output and, on the exact path, every layer's attention weights.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn

from vitlab.data.preprocessing import Preprocessing
from vitlab.errors import VitlabError
from vitlab.models.layers import Block, GeluForm, PatchEmbed
from vitlab.models.position import sincos_2d

Pooling = Literal["token", "avg"]
PosEmbedKind = Literal["learned", "sincos2d"]


@dataclass
class ViTConfig:
    """Everything that decides a ViT's architecture. Each option is orthogonal to the others."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000  # 0: no head, the model returns pooled features
    embed_dim: int = 768  # D
    depth: int = 12  # L
    num_heads: int = 12  # k
    mlp_dim: int = 3072  # "MLP size" of Table 1
    qkv_bias: bool = True
    class_token: bool = True
    global_pool: Pooling = "token"  # "avg": mean of the patch tokens (paper App. D.3)
    fc_norm: bool = False  # True: the final LayerNorm is applied after pooling (timm's avg-pool models)
    pos_embed: PosEmbedKind = "learned"  # "sincos2d": fixed 2-D sin-cos table (big_vision's baseline)
    representation_size: int | None = None  # tanh pre-logits layer of the paper's pre-training head
    drop_rate: float = 0.0  # dropout after position embedding, in MLPs and attention output, before the head
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth of the last block; earlier blocks get a linear ramp from 0
    layer_norm_eps: float = 1e-6  # Google and timm weights; Hugging Face configs ship 1e-12
    gelu: GeluForm = "exact"  # "tanh": the approximation Google's JAX code uses
    zero_head: bool = True  # the paper zero-initialises the classifier for fine-tuning
    hybrid_layers: tuple[int, ...] | None = None  # ResNet-v2 stage depths of a hybrid stem (R50: (3, 4, 9))

    def __post_init__(self) -> None:
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = _int_tuple("img_size", self.img_size)  # type: ignore[assignment]
        if self.hybrid_layers is not None:
            self.hybrid_layers = _int_tuple("hybrid_layers", self.hybrid_layers)
        self.validate()

    def validate(self) -> None:
        for name in ("patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_dim"):
            if not _is_int(getattr(self, name)):
                raise VitlabError(f"ViT option {name} must be an integer, got {getattr(self, name)!r}")
        size = self.representation_size
        if size is not None and not _is_int(size):
            raise VitlabError(f"ViT option representation_size must be an integer or None, got {size!r}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate", "layer_norm_eps"):
            value = getattr(self, name)
            if not _is_number(value):
                raise VitlabError(f"ViT option {name} must be a number, got {value!r}")
            if name != "layer_norm_eps" and not 0.0 <= value <= 1.0:
                raise VitlabError(f"ViT option {name} is a probability, between 0 and 1; got {value}")
        if self.num_classes < 0:
            raise VitlabError(f"ViT option num_classes must be 0 (no head) or more, got {self.num_classes}")
        choices = {"global_pool": ("token", "avg"), "pos_embed": ("learned", "sincos2d"), "gelu": ("exact", "tanh")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise VitlabError(f"ViT option {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.global_pool == "token" and not self.class_token:
            raise VitlabError("global_pool='token' needs class_token=True: use global_pool='avg' for a model without one")
        if self.embed_dim % self.num_heads:
            raise VitlabError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        for name in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_dim"):
            if getattr(self, name) <= 0:
                raise VitlabError(f"ViT option {name} must be positive, got {getattr(self, name)}")

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.class_token else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["img_size"] = list(self.img_size)
        data["hybrid_layers"] = list(self.hybrid_layers) if self.hybrid_layers is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ViTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VitlabError(f"unknown ViT config field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """A list or tuple of integers as a tuple; a VitlabError naming the option otherwise."""
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        raise VitlabError(f"ViT option {name} must be a list of integers, got {value!r}")
    return tuple(int(v) for v in value)


@dataclass
class ViTIntermediates:
    """What `forward_intermediates` returns: normalised final tokens, every block's output, attention maps."""

    features: Tensor  # (batch, tokens, D) after the final LayerNorm, as forward_features
    hidden_states: list[Tensor] = field(default_factory=list)  # block outputs (before the final norm), one per layer
    attentions: list[Tensor] | None = None  # (batch, heads, tokens, tokens) per layer, on request


class VisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig | None = None, **overrides: Any):
        super().__init__()
        config = config or ViTConfig()
        if overrides:
            config = ViTConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        dim = config.embed_dim
        self.embed_dim = self.num_features = dim
        self.num_classes = config.num_classes
        self.num_prefix_tokens = config.num_prefix_tokens
        self.global_pool = config.global_pool
        # What inputs the weights expect; loaders replace it with the checkpoint's own.
        self.preprocessing = Preprocessing(config.img_size, (0.5,) * config.in_chans, (0.5,) * config.in_chans)
        self.labels: list[str] | None = None  # class names, when a checkpoint or dataset provides them

        self.patch_embed = _build_patch_embed(config)
        self.grid_size: tuple[int, int] = self.patch_embed.grid_size
        num_positions = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        if config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, dim))
        else:
            table = torch.cat([torch.zeros(self.num_prefix_tokens, dim), sincos_2d(self.grid_size, dim)])
            self.register_buffer("pos_embed", table[None], persistent=False)
        self.pos_drop = nn.Dropout(config.drop_rate)

        drop_path = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.num_heads,
                config.mlp_dim,
                qkv_bias=config.qkv_bias,
                drop=config.drop_rate,
                attn_drop=config.attn_drop_rate,
                drop_path=drop_path[i],
                eps=config.layer_norm_eps,
                gelu=config.gelu,
            )
            for i in range(config.depth)
        )
        self.norm = nn.Identity() if config.fc_norm else nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.fc_norm else nn.Identity()
        if config.representation_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(dim, config.representation_size))
            self.pre_logits.add_module("act", nn.Tanh())
            self.num_features = config.representation_size
        else:
            self.pre_logits = nn.Identity()
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = self._new_head(config.num_classes)
        self.init_weights()

    # --- construction -------------------------------------------------------------------------------------

    def _new_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Linear(self.num_features, num_classes)
        if self.config.zero_head:
            nn.init.zeros_(head.weight)
        else:
            nn.init.xavier_uniform_(head.weight)
        nn.init.zeros_(head.bias)
        return head

    def init_weights(self) -> None:
        """Google's vit_jax initialisation: xavier-uniform linears, LeCun-normal patch projection."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith("head"):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = self.patch_embed.proj
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        # LeCun normal as JAX draws it: truncated at 2 std, the std corrected for the truncation
        std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
        nn.init.trunc_normal_(proj.weight, std=std, a=-2 * std, b=2 * std)
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.normal_(self.pos_embed, std=0.02)

    def reset_classifier(self, num_classes: int, global_pool: Pooling | None = None) -> None:
        """Replace the head with a fresh one for `num_classes` (zero-initialised when config.zero_head)."""
        changes = {"num_classes": num_classes} if global_pool is None else {"num_classes": num_classes, "global_pool": global_pool}
        self.config = ViTConfig.from_dict({**self.config.to_dict(), **changes})  # never mutate a caller's config
        self.global_pool = self.config.global_pool
        self.num_classes = num_classes
        self.labels = None
        device = next(self.parameters()).device
        self.head = self._new_head(num_classes).to(device)

    def no_weight_decay(self) -> set[str]:
        """Parameters that must not be weight-decayed besides biases and norms (which optimisers skip by ndim)."""
        names = {"cls_token"} if self.cls_token is not None else set()
        if isinstance(self.pos_embed, nn.Parameter):
            names.add("pos_embed")
        return names

    # --- forward ------------------------------------------------------------------------------------------

    def embed(self, images: Tensor) -> Tensor:
        """Eq. 1: patch tokens, the class token in front, position embeddings added."""
        x = self.patch_embed(images)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self.pos_embed)

    def forward_features(self, images: Tensor) -> Tensor:
        """All tokens after the last block and the final LayerNorm: (batch, prefix + patches, D)."""
        x = self.embed(images)
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)

    def forward_intermediates(self, images: Tensor, return_attention: bool = False) -> ViTIntermediates:
        """Like forward_features, also returning every block's output and, if asked, every attention map.

        Attention maps come from the exact (non-fused) attention path; its outputs equal the fused path's.
        """
        x = self.embed(images)
        hidden_states, attentions = [], []
        for block in self.blocks:
            x, weights = block(x, return_weights=return_attention)
            hidden_states.append(x)
            if weights is not None:
                attentions.append(weights)
        return ViTIntermediates(self.norm(x), hidden_states, attentions if return_attention else None)

    def pool(self, features: Tensor) -> Tensor:
        if self.global_pool == "avg":
            return features[:, self.num_prefix_tokens :].mean(dim=1)
        return features[:, 0]

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the tokens, then the pre-logits layer (eq. 4) and, unless `pre_logits`, the classifier."""
        x = self.pre_logits(self.fc_norm(self.pool(features)))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


def _build_patch_embed(config: ViTConfig) -> nn.Module:
    if config.hybrid_layers is None:
        return PatchEmbed(config.img_size, config.patch_size, config.in_chans, config.embed_dim)
    from vitlab.models.resnet import HybridEmbed  # only hybrids need the CNN stem

    return HybridEmbed(config.img_size, config.patch_size, config.in_chans, config.embed_dim, config.hybrid_layers)
