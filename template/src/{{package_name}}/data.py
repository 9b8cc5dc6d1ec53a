"""Synthetic customer-churn data: generation, loading and validation."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputFileNotFoundError, WorkshopError
from .messages import text

logger = logging.getLogger(__name__)

TARGET = "churned"
ID_COLUMN = "customer_id"
NUMERIC_FEATURES = [
    "age",
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_tickets",
    "monthly_usage_gb",
]
CATEGORICAL_FEATURES = ["contract_type", "payment_method", "internet_service"]
FEATURE_COLUMNS = NUMERIC_FEATURES + CATEGORICAL_FEATURES
CHURN_RATE_RANGE = (0.05, 0.60)
BATCH_PATTERN = re.compile(r"batch_(\d+)\.csv")

CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENTS = ["electronic-check", "credit-card", "bank-transfer", "mailed-check"]
INTERNET = ["fiber", "dsl", "none"]


class DataValidationError(WorkshopError, ValueError):
    """The data set cannot be used for training; the message says why."""


def generate_customer_data(
    n_customers: int = 5000, seed: int = 42, drift: float = 0.0
) -> pd.DataFrame:
    """Draw a reproducible customer table whose churn depends on the features.

    Churn follows a logistic model (short tenure, monthly contracts, many
    support tickets and high charges raise it) so that models have signal to find.
    ``drift`` (0 to 1) shifts the population the way a real churn base shifts after a
    price rise: newer customers, higher charges, more monthly contracts, more churn.
    Age, tickets, usage, payment method and internet service stay as they were, so
    that a drift report has both moved and unmoved features to tell apart. At 0 the
    draws are exactly those of the training data.
    """
    if not 0.0 <= drift <= 1.0:
        raise DataValidationError(text("data.drift_outside", drift=drift))
    rng = np.random.default_rng(seed)
    tenure = shorter_tenure(rng.integers(1, 73, n_customers), drift)
    contract = rng.choice(CONTRACTS, n_customers, p=drifted_contract_mix(drift))
    monthly = np.round(rng.normal(70 + 30 * drift, 25, n_customers).clip(18, 150), 2)
    tickets = rng.poisson(1.5, n_customers)
    logit = (
        -1.2
        + 1.0 * drift
        - 0.04 * tenure
        + 0.02 * (monthly - 70)
        + 0.45 * tickets
        + np.select([contract == "month-to-month", contract == "one-year"], [1.4, 0.2], -0.8)
        + rng.normal(0, 0.5, n_customers)
    )
    churned = rng.random(n_customers) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            ID_COLUMN: [f"C{index:06d}" for index in range(n_customers)],
            "age": rng.integers(18, 80, n_customers),
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": np.round(monthly * tenure * rng.uniform(0.9, 1.1, n_customers), 2),
            "support_tickets": tickets,
            "monthly_usage_gb": np.round(rng.gamma(2.0, 60.0, n_customers), 1),
            "contract_type": contract,
            "payment_method": rng.choice(PAYMENTS, n_customers),
            "internet_service": rng.choice(INTERNET, n_customers, p=[0.45, 0.40, 0.15]),
            TARGET: churned.astype(int),
        }
    )


def shorter_tenure(tenure: np.ndarray, drift: float) -> np.ndarray:
    """Tenures shrunk towards a month as drift grows: many recent customers."""
    return np.maximum(1, np.round(tenure * (1 - 0.6 * drift))).astype(tenure.dtype)


def drifted_contract_mix(drift: float) -> list[float]:
    """Contract shares moving from the training mix towards mostly month-to-month."""
    base, shifted = np.array([0.55, 0.25, 0.20]), np.array([0.95, 0.04, 0.01])
    return list(base + drift * (shifted - base))


def save_customer_data(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_seeded_data(path: Path) -> Path:
    """Write the seeded data set that `make data` writes, where it is missing.

    The first command that needs the data creates it, so a fresh copy runs part 1
    with no data step; written to a temporary file first, so that two servers
    starting at once never read half a file.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_customer_data(generate_customer_data(), partial)
        partial.replace(path)
    except OSError:  # a read-only folder: the Docker containers mount data/ read-only
        raise InputFileNotFoundError(text("data.cannot_seed", path=path)) from None
    logger.warning(text("data.seeded_data_written", path=path))
    return path


def load_customer_data(path: str | Path) -> pd.DataFrame:
    """Read the customer CSV, with an actionable message when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(text("data.not_found", path=path))
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataValidationError(text("data.empty", path=path)) from None


def data_version(path: str | Path) -> str:
    """A fingerprint of the data file for cache keys: regenerating the data changes it."""
    path = Path(path)
    return str(path.stat().st_mtime_ns) if path.exists() else "missing"


def missing_columns(frame: pd.DataFrame, required: list[str]) -> list[str]:
    return [column for column in required if column not in frame.columns]


def text_in_numeric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric features holding text (a typo, a unit, a decimal comma): no model can use them."""
    return [
        name
        for name in NUMERIC_FEATURES
        if name in frame.columns and not pd.api.types.is_numeric_dtype(frame[name])
    ]


def validate_customer_data(frame: pd.DataFrame) -> None:
    """Refuse data that would train a meaningless model, naming the problem."""
    if missing := missing_columns(frame, [*FEATURE_COLUMNS, TARGET]):
        raise DataValidationError(text("data.missing_columns", columns=", ".join(missing)))
    if frame.empty:
        raise DataValidationError(text("data.no_rows"))
    if numeric := text_in_numeric_columns(frame):
        raise DataValidationError(text("data.text_in_numeric", columns=", ".join(numeric)))
    if (n_missing := int(frame[TARGET].isna().sum())) > 0:
        raise DataValidationError(text("data.missing_target", column=TARGET, count=n_missing))
    rate = float(frame[TARGET].mean())
    low, high = CHURN_RATE_RANGE
    if not low <= rate <= high:
        raise DataValidationError(text("data.churn_rate_outside", rate=rate, low=low, high=high))


# --- Batches: new customers arriving after training ---------------------------------


def batch_files(batch_dir: Path) -> list[Path]:
    """The batches, oldest first (``batch_001.csv``, ``batch_002.csv``...)."""
    found = [path for path in batch_dir.glob("batch_*.csv") if BATCH_PATTERN.fullmatch(path.name)]
    return sorted(found, key=lambda path: int(BATCH_PATTERN.fullmatch(path.name)[1]))


def newest_batch(batch_dir: Path) -> Path:
    if batches := batch_files(batch_dir):
        return batches[-1]
    raise InputFileNotFoundError(text("data.no_batch", folder=batch_dir))


def write_batch(
    batch_dir: Path, rows: int = 1000, seed: int | None = None, drift: float = 0.0
) -> Path:
    """Write the next batch, without the outcome column; seeded by its number unless given."""
    existing = batch_files(batch_dir)
    number = int(BATCH_PATTERN.fullmatch(existing[-1].name)[1]) + 1 if existing else 1
    frame = generate_customer_data(rows, seed=1000 + number if seed is None else seed, drift=drift)
    frame[ID_COLUMN] = [f"B{number:03d}-{index:06d}" for index in range(rows)]
    return save_customer_data(frame.drop(columns=[TARGET]), batch_dir / f"batch_{number:03d}.csv")
