"""Evaluation: top-k accuracy, loss, per-class accuracy and the confusion matrix, and their plots; frozen
features (cached) and the paper's few-shot linear probe on them."""

from vitlab.evaluation.classification import Evaluation, evaluate, to_model_inputs
from vitlab.evaluation.feature_cache import DatasetSpec, FeatureExtractor, Features
from vitlab.evaluation.features import extract_features, save_features
from vitlab.evaluation.fewshot import FewShotResult, evaluate_fewshot, fewshot, ridge_fit, ridge_predict

__all__ = [
    "DatasetSpec",
    "Evaluation",
    "FeatureExtractor",
    "Features",
    "FewShotResult",
    "evaluate",
    "evaluate_fewshot",
    "extract_features",
    "fewshot",
    "ridge_fit",
    "ridge_predict",
    "save_features",
    "to_model_inputs",
]
