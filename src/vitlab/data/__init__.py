"""Images in, tensors out: datasets for training, and the preprocessing that travels with every checkpoint."""

from vitlab.data.datasets import DATASETS, SPLITS, ImageDataset, has_test_split, load_dataset
from vitlab.data.preprocessing import Preprocessing, load_image, load_images

__all__ = ["DATASETS", "SPLITS", "ImageDataset", "Preprocessing", "has_test_split", "load_dataset", "load_image", "load_images"]
