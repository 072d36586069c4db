"""Evaluation: top-k accuracy, loss, per-class accuracy and the confusion matrix, and their plots."""

from vitlab.evaluation.classification import Evaluation, evaluate, to_model_inputs

__all__ = ["Evaluation", "evaluate", "to_model_inputs"]
