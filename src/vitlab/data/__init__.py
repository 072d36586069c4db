"""Images in, tensors out: datasets for training, and the preprocessing that travels with every checkpoint."""

from vitlab.data.datasets import DATASETS, SPLITS, ImageDataset, load_dataset
from vitlab.data.preprocessing import Preprocessing, load_image, load_images

__all__ = ["DATASETS", "SPLITS", "ImageDataset", "Preprocessing", "load_dataset", "load_image", "load_images"]
