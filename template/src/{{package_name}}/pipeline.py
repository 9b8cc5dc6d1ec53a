"""The training pipeline as plain steps, so every orchestrator wraps the same code.

Prefect tasks, Dagster assets and the reference notebook call these functions;
``run_training_pipeline`` chains them for scripts and ``python -m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .config import Settings, load_settings
from .data import load_customer_data, validate_customer_data, write_seeded_data
from .evaluation import PRIMARY_METRIC, best_model_name, evaluate_model
from .features import train_test_frames
from .tracking import (
    LoggedCandidate,
    Promotion,
    log_candidate,
    register_and_promote,
    setup_tracking,
)
from .training import DEFAULT_MODELS, train_model


@dataclass(frozen=True)
class DataSplit:
    features_train: pd.DataFrame
    features_test: pd.DataFrame
    target_train: pd.Series
    target_test: pd.Series


def ensure_data(settings: Settings) -> None:
    """Write the seeded data set where it is missing; a student's own file is never invented.

    Loading does it, and so does deploying: a deployment's runs may execute in the Docker
    containers, which read data/ without writing it, so the host writes it first.
    """
    if settings.uses_seeded_data and not settings.data_path.exists():
        write_seeded_data(settings.data_path)


def load_validated_data(settings: Settings) -> pd.DataFrame:
    """The customers of DATA_PATH, checked; the seeded data set is written if missing."""
    ensure_data(settings)
    frame = load_customer_data(settings.data_path)
    validate_customer_data(frame)
    return frame


def split_data(frame: pd.DataFrame, test_size: float = 0.2, seed: int = 42) -> DataSplit:
    return DataSplit(*train_test_frames(frame, test_size=test_size, seed=seed))


def train_and_log(
    name: str, split: DataSplit, seed: int = 42, tags: dict[str, str] | None = None
) -> LoggedCandidate:
    """Train one candidate, evaluate it on the test set and log it to MLflow."""
    model = train_model(name, split.features_train, split.target_train, seed=seed)
    metrics = evaluate_model(model, split.features_test, split.target_test)
    return log_candidate(name, model, metrics, split.features_test, split.target_test, tags)


def promote_best(
    candidates: list[LoggedCandidate], settings: Settings, metric: str = PRIMARY_METRIC
) -> Promotion:
    by_name = {candidate.name: candidate for candidate in candidates}
    best = by_name[best_model_name({c.name: c.metrics for c in candidates}, metric)]
    return register_and_promote(best, settings.model_name, metric)


def run_training_pipeline(
    model_names: list[str] | None = None,
    test_size: float = 0.2,
    seed: int = 42,
    settings: Settings | None = None,
    tags: dict[str, str] | None = None,
) -> Promotion:
    settings = settings or load_settings()
    setup_tracking(settings)
    split = split_data(load_validated_data(settings), test_size, seed)
    candidates = [train_and_log(name, split, seed, tags) for name in model_names or DEFAULT_MODELS]
    return promote_best(candidates, settings)
