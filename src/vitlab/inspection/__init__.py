"""Looking inside a ViT (paper Section 4.5): attention maps and rollout, mean attention distance, position
embedding similarity, principal components of the patch filters. Also importable as `vitlab.inspect`.

The figures (PNG) are drawn by `vitlab.inspection.plots`, which this package does not import: the numbers need
torch only.
"""

from vitlab.inspection.attention import (
    attention_maps,
    attention_rollout,
    mean_attention_distance,
    patch_distances,
    rollout,
    rollout_source,
)
from vitlab.inspection.embeddings import PatchComponents, patch_embedding_components, position_embedding_similarity

__all__ = [
    "PatchComponents",
    "attention_maps",
    "attention_rollout",
    "mean_attention_distance",
    "patch_distances",
    "patch_embedding_components",
    "position_embedding_similarity",
    "rollout",
    "rollout_source",
]
