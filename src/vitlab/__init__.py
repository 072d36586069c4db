"""vitlab: the Vision Transformer, faithful to the paper and practical end to end."""

from vitlab.checkpoints import load_pretrained, save_pretrained
from vitlab.errors import VitlabError
from vitlab.models import MODELS, ViTConfig, VisionTransformer, create_model, list_models, model_config
from vitlab.models.position import resample_pos_embed, sincos_2d

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "ViTConfig",
    "VisionTransformer",
    "VitlabError",
    "create_model",
    "list_models",
    "load_pretrained",
    "model_config",
    "resample_pos_embed",
    "save_pretrained",
    "sincos_2d",
]


def __getattr__(name: str) -> object:
    """`vitlab.inspect` (an alias of `vitlab.inspection`) without importing it until it is used."""
    if name == "inspect":
        import importlib

        return importlib.import_module("vitlab.inspect")
    raise AttributeError(f"module 'vitlab' has no attribute {name!r}")
