"""The candidate models, each a full pipeline from raw columns to a prediction."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from .errors import WorkshopError
from .features import build_preprocessor
from .messages import text

MODEL_FACTORIES: dict[str, Callable[[int], ClassifierMixin]] = {
    "logistic_regression": lambda seed: LogisticRegression(max_iter=1000, random_state=seed),
    "random_forest": lambda seed: RandomForestClassifier(
        n_estimators=100, max_depth=8, random_state=seed, n_jobs=1
    ),
    "gradient_boosting": lambda seed: GradientBoostingClassifier(random_state=seed),
}
DEFAULT_MODELS = list(MODEL_FACTORIES)


class UnknownModelError(WorkshopError, ValueError):
    """A model name outside ``MODEL_FACTORIES``; the message lists the known ones."""


def build_model(name: str, seed: int = 42) -> Pipeline:
    if name not in MODEL_FACTORIES:
        known = ", ".join(MODEL_FACTORIES)
        raise UnknownModelError(text("training.unknown_model", name=name, known=known))
    return Pipeline(
        [("preprocess", build_preprocessor()), ("classifier", MODEL_FACTORIES[name](seed))]
    )


def train_model(name: str, features: pd.DataFrame, target: pd.Series, seed: int = 42) -> Pipeline:
    return build_model(name, seed).fit(features, target)


def model_params(model: Pipeline) -> dict[str, object]:
    """The classifier's hyper-parameters, as logged to MLflow."""
    return {
        key: value
        for key, value in model.named_steps["classifier"].get_params().items()
        if isinstance(value, int | float | str | bool) or value is None
    }
