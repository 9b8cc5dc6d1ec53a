"""Model evaluation and the choice of the best candidate."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline

from .messages import text

PRIMARY_METRIC = "f1"


def evaluate_model(model: Pipeline, features: pd.DataFrame, target: pd.Series) -> dict[str, float]:
    predicted = model.predict(features)
    probability = model.predict_proba(features)[:, 1]
    return {
        "accuracy": float(accuracy_score(target, predicted)),
        "precision": float(precision_score(target, predicted, zero_division=0)),
        "recall": float(recall_score(target, predicted, zero_division=0)),
        "f1": float(f1_score(target, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(target, probability)),
    }


def best_model_name(results: dict[str, dict[str, float]], metric: str = PRIMARY_METRIC) -> str:
    """Name of the model with the highest ``metric``."""
    if not results:
        raise ValueError("No evaluated model to choose from")
    return max(results, key=lambda name: results[name][metric])


def confusion_matrix_figure(model: Pipeline, features: pd.DataFrame, target: pd.Series) -> Figure:
    """A figure of its own, not pyplot's: the candidates are logged from parallel threads,
    and pyplot keeps every figure in one global registry, shared and never freed."""
    figure = Figure(figsize=(4, 4))
    axes = figure.subplots()
    ConfusionMatrixDisplay.from_estimator(model, features, target, ax=axes, colorbar=False)
    axes.set_title(text("training.confusion_matrix"))
    figure.tight_layout()
    return figure
