"""`vitlab inspect`: the paper's Figure 6 and 7 pictures for any checkpoint (PNG), with the numbers (JSON)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vitlab.checkpoints import load_pretrained
from vitlab.checkpoints.files import Writer, json_writer, write_files
from vitlab.cli.common import add_model_override_flags, emit, model_overrides
from vitlab.cli.predict import image_paths
from vitlab.data.datasets import load_dataset
from vitlab.data.preprocessing import load_images
from vitlab.errors import VitlabError
from vitlab.evaluation.classification import to_model_inputs
from vitlab.inspection import attention as attn
from vitlab.inspection import plots
from vitlab.inspection.embeddings import max_components, patch_embedding_components, position_embedding_similarity
from vitlab.models.vit import VisionTransformer

COMPONENTS = 28  # the paper's Figure 7 left


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="look inside a model: attention rollout, attention distance, position embeddings, patch filters",
        description="Write the paper's Figure 6/7 pictures (PNG) and their numbers (inspect.json) into --out. "
        "Images are resized to the model's input size (--img-size N loads the model at N px, position embeddings "
        "resampled). For models that pool by averaging (no class token), maps show the mean over the patch tokens "
        "instead of the class token.")
    parser.add_argument("--checkpoint", required=True, help="any checkpoint vitlab reads (a run folder too)")
    parser.add_argument("--images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    parser.add_argument("--data", help="or a dataset: digits, mnist, fashion-mnist, cifar10, cifar100, imagefolder")
    parser.add_argument("--data-dir")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as in training, to get the same val split")
    parser.add_argument("--seed", type=int, default=0, help="as in training, to get the same val split")
    parser.add_argument("--num-images", type=int, default=128, help="dataset images for the attention distance")
    parser.add_argument("--show", type=int, default=8, help="images drawn with their rollout and per-head attention")
    parser.add_argument("--layer", type=int, help="layer of the per-head attention picture, 1 = first (default: last)")
    parser.add_argument("--components", type=int, help=f"principal components of the patch filters (default {COMPONENTS})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", required=True, help="folder for the PNGs and inspect.json")
    add_model_override_flags(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for flag in ("num_images", "show", "batch_size", "components"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise VitlabError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.images and args.data:
        raise VitlabError("give images with --images or a dataset with --data, not both")
    model = load_pretrained(args.checkpoint, **model_overrides(args))
    layer = _layer(args.layer, model.config.depth)
    if args.components is not None:
        max_components(model)  # a hybrid asked for patch filters fails now, not after the attention pass
    out = Path(args.out)
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "out": str(out), "model": _describe(model)}
    writers: dict[str, Writer] = {}
    inputs, names = _inputs(args, model)
    if inputs is not None:
        report.update(_attention(model, inputs, names, layer, args, writers))
    similarity = position_embedding_similarity(model)
    report["position_embedding_similarity"] = similarity.tolist()
    writers["position_embedding_similarity.png"] = plots.position_similarity_figure(similarity)
    report["patch_embedding"] = _filters(model, args.components, writers)
    report["files"] = {name[: -len(".png")]: str(out / name) for name in writers}
    write_files(out, {**writers, "inspect.json": json_writer(report)})
    emit(_light(report), args.json, _render)
    return 0


def _layer(layer: int | None, depth: int) -> int:
    if layer is None:
        return depth
    if not 1 <= layer <= depth:
        raise VitlabError(f"--layer {layer} is out of range: this model has {depth} layers, numbered 1 to {depth}")
    return layer


def _describe(model: VisionTransformer) -> dict[str, Any]:
    config = model.config
    return dict(img_size=list(config.img_size), patch_size=attn.token_pixels(model)[0], grid_size=list(model.grid_size),
                depth=config.depth, num_heads=config.num_heads, class_token=config.class_token,
                global_pool=config.global_pool, pos_embed=config.pos_embed, hybrid=config.hybrid_layers is not None)


def _inputs(args: argparse.Namespace, model: VisionTransformer) -> tuple[Tensor | None, list[dict[str, Any]]]:
    """Normalised images at the model's size and a description of each; (None, []) without images or data."""
    if args.images:
        paths = image_paths(args.images)
        return load_images(paths, model.preprocessing), [dict(image=str(p), true=None) for p in paths]
    if not args.data:
        return None, []
    dataset = load_dataset(args.data, args.data_dir, args.split, val_fraction=args.val_fraction, seed=args.seed)
    if dataset.channels != model.preprocessing.channels:
        raise VitlabError(f"the model expects {model.preprocessing.channels}-channel images but dataset "
                          f"{dataset.name} has {dataset.channels}-channel ones")
    count = min(args.num_images, len(dataset))
    inputs = to_model_inputs(dataset.images[:count], model.preprocessing)
    names = [dict(image=f"{dataset.name} {args.split} #{i}", true=dataset.classes[int(dataset.labels[i])])
             for i in range(count)]
    return inputs, names


def _attention(model: VisionTransformer, inputs: Tensor, names: list[dict[str, Any]], layer: int,
               args: argparse.Namespace, writers: dict[str, Writer]) -> dict[str, Any]:
    """Rollout and one layer's per-head attention of the first --show images, attention distance over all."""
    shown = inputs[: args.show]
    rollouts, heads, predictions = [], [], []
    grid, prefix, pool = model.grid_size, model.num_prefix_tokens, model.global_pool
    for logits, attentions in attn.attention_batches(model, shown, batch_size=args.batch_size):
        rollouts.append(attn.rollout(attentions, grid, prefix, pool))
        heads.append(attn.read_rows(attentions[layer - 1], grid, prefix, pool))
        predictions += _predictions(model, logits)
    rollout, per_head = torch.cat(rollouts), torch.cat(heads)
    for name, prediction in zip(names, predictions):
        prediction.update(name)
    distances = attn.mean_attention_distance(model, inputs, batch_size=args.batch_size, progress=not args.json)
    source = attn.rollout_source(model)
    images = plots.as_display(shown, model.preprocessing.mean, model.preprocessing.std)
    titles = [_title(p) for p in predictions]
    writers["rollout.png"] = plots.rollout_figure(images, rollout, [t[0] for t in titles], [t[1] for t in titles],
                                                  source)
    writers["attention_heads.png"] = plots.head_attention_figure(images[:4], per_head[:4], layer, source)
    writers["attention_distance.png"] = plots.distance_figure(distances, model.config.img_size)
    return {
        "images": {"count": int(inputs.shape[0]), "size": list(inputs.shape[-2:]), "shown": predictions},
        "rollout": {"of": source, "maps": rollout.tolist()},
        "layer_attention": {"layer": layer, "of": source, "maps": per_head.tolist()},
        "mean_attention_distance": {"pixels": distances.tolist(), "per_layer": distances.mean(dim=1).tolist()},
    }


def _predictions(model: VisionTransformer, logits: Tensor) -> list[dict[str, Any]]:
    if model.num_classes <= 0:
        return [dict(label=None, index=None, probability=None) for _ in logits]
    best = logits.softmax(dim=-1).max(dim=-1)
    labels = model.labels or [str(i) for i in range(model.num_classes)]
    return [dict(label=labels[i], index=int(i), probability=float(p))
            for p, i in zip(best.values.tolist(), best.indices.tolist())]


def _title(prediction: dict[str, Any]) -> tuple[str, str]:
    source = Path(prediction["image"]).name if prediction["true"] is None else prediction["image"]
    true = f"\ntrue: {prediction['true']}" if prediction["true"] is not None else ""
    guess = "no classifier head" if prediction["label"] is None else (
        f"predicted: {prediction['label']} ({prediction['probability']:.2f})")
    return source + true, guess


def _filters(model: VisionTransformer, asked: int | None, writers: dict[str, Writer]) -> dict[str, Any]:
    if model.config.hybrid_layers is not None and asked is None:  # asked for explicitly, max_components refuses
        reason = "a hybrid model's patch embedding is a 1x1 convolution over ResNet features: no pixel filters"
        warnings.warn(f"no patch_filters.png: {reason}")
        return {"skipped": reason}
    available = max_components(model)
    count = min(asked or COMPONENTS, available)
    if asked is not None and asked > available:
        warnings.warn(f"--components {asked}: the patch filters have only {available} principal components; "
                      f"showing {available}")
    pca = patch_embedding_components(model, count)
    writers["patch_filters.png"] = plots.filters_figure(pca.components, pca.explained_variance_ratio)
    return {"components": count, "explained_variance": pca.explained_variance.tolist(),
            "explained_variance_ratio": pca.explained_variance_ratio.tolist(), "filters": pca.components.tolist()}


def _light(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its largest arrays (they stay in inspect.json)."""
    light = {key: value for key, value in report.items() if key != "position_embedding_similarity"}
    light["patch_embedding"] = {k: v for k, v in report["patch_embedding"].items() if k != "filters"}
    return light


def _render(r: dict[str, Any]) -> str:
    lines = []
    if "mean_attention_distance" in r:
        lines.append(f"{r['images']['count']} images at {r['images']['size'][0]}x{r['images']['size'][1]} px; "
                     f"maps show the {r['rollout']['of']}")
        per_layer = ", ".join(f"{d:.1f}" for d in r["mean_attention_distance"]["per_layer"])
        lines.append(f"mean attention distance per layer (pixels, mean over heads): {per_layer}")
    else:
        lines.append("no --images or --data: attention pictures skipped, embeddings only")
    pca = r["patch_embedding"]
    if "components" in pca:
        lines.append(f"patch filters: first {pca['components']} components explain "
                     f"{100 * sum(pca['explained_variance_ratio']):.1f} % of the variance")
    lines += [f"{name}: {path}" for name, path in r["files"].items()]
    lines.append(f"numbers: {r['out']}/inspect.json")
    return "\n".join(lines)
