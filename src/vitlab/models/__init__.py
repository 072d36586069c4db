"""Model definitions: shared transformer layers, the ViT, the hybrid's ResNet stem and the name registry."""

from vitlab.models.registry import MODELS, create_model, list_models, model_config
from vitlab.models.vit import ViTConfig, ViTIntermediates, VisionTransformer

__all__ = ["MODELS", "ViTConfig", "ViTIntermediates", "VisionTransformer", "create_model", "list_models", "model_config"]
