"""Images in, tensors out: preprocessing that travels with every checkpoint."""

from vitlab.data.preprocessing import Preprocessing, load_image, load_images

__all__ = ["Preprocessing", "load_image", "load_images"]
