"""Checkpoints: vitlab's own format, and timm, Hugging Face and Google npz weights, read and written.

`load_pretrained(path)` tells the format apart by structure (`detect_format`), converts the tensors to
vitlab's names (timm's), infers the architecture from them and builds the model; `save_pretrained` writes
vitlab's format; `convert` writes any readable checkpoint as vitlab, Hugging Face or timm.
"""

from vitlab.checkpoints.base import Format
from vitlab.checkpoints.detect import detect_format
from vitlab.checkpoints.io import save_pretrained
from vitlab.checkpoints.load import convert, detect_source, load_pretrained

__all__ = ["Format", "convert", "detect_format", "detect_source", "load_pretrained", "save_pretrained"]
