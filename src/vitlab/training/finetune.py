"""Fine-tuning pretrained weights: the model a run starts from, and which of its parameters stay frozen.

The recipe itself (SGD with momentum, no weight decay, clipping, warmup + cosine) is `recipe.FINETUNE`; the
loop, resume, DDP and run folders are the same as for training from scratch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from vitlab.checkpoints.load import load_pretrained
from vitlab.errors import VitlabError
from vitlab.models.vit import VisionTransformer
from vitlab.training.optim import vit_layer_id


def pretrained_for_finetuning(source: str, num_classes: int, model_name: str | None,
                              overrides: dict[str, Any]) -> VisionTransformer:
    """The weights at `source` with a new zero-initialised head for `num_classes` (the paper's fine-tuning head).

    `overrides` are load_pretrained's: `img_size` other than the checkpoint's resamples the position embeddings
    (Section 3.2); dropout and stochastic-depth rates set the new run's regularisation. The model keeps the
    checkpoint's normalisation and resize filter and is evaluated with a plain resize (crop 1.0), as in the paper.
    """
    model = load_pretrained(source, model=model_name, num_classes=0, **overrides)
    model.reset_classifier(num_classes)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    model.preprocessing = replace(model.preprocessing, crop_pct=1.0)
    return model.train()


def freeze(model: VisionTransformer, *, backbone: bool = False, blocks: int = 0) -> list[str]:
    """Stop gradients to part of the model; returns the frozen parameter names.

    `backbone`: everything but the head (a linear probe on the pre-logits). `blocks`: the embeddings (patch
    projection, class token, position embeddings) and the first `blocks` transformer blocks; the later
    blocks, the final norm and the head still train.
    """
    depth = len(model.blocks)
    if blocks > depth:
        raise VitlabError(f"freeze_blocks={blocks} but the model has {depth} blocks; freeze at most {depth} "
                          "(or use freeze_backbone for a linear probe)")
    frozen = []
    for name, param in model.named_parameters():
        head = name.startswith("head.")
        if (backbone and not head) or (blocks > 0 and not head and vit_layer_id(name, depth) <= blocks):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
