"""Synthetic customer-churn data: generation, loading and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputFileNotFoundError, WorkshopError

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

CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENTS = ["electronic-check", "credit-card", "bank-transfer", "mailed-check"]
INTERNET = ["fiber", "dsl", "none"]


class DataValidationError(WorkshopError, ValueError):
    """The data set cannot be used for training; the message says why."""


def generate_customer_data(n_customers: int = 5000, seed: int = 42) -> pd.DataFrame:
    """Draw a reproducible customer table whose churn depends on the features.

    Churn follows a logistic model (short tenure, monthly contracts, many
    support tickets and high charges raise it) so that models have signal to find.
    """
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 73, n_customers)
    contract = rng.choice(CONTRACTS, n_customers, p=[0.55, 0.25, 0.20])
    monthly = np.round(rng.normal(70, 25, n_customers).clip(18, 150), 2)
    tickets = rng.poisson(1.5, n_customers)
    logit = (
        -1.2
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


def save_customer_data(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def load_customer_data(path: str | Path) -> pd.DataFrame:
    """Read the customer CSV, with an actionable message when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(
            f"Data file {path} not found. Create it with `python generate_sample_data.py` "
            "(or `make data`)."
        )
    return pd.read_csv(path)


def data_version(path: str | Path) -> str:
    """A fingerprint of the data file for cache keys: regenerating the data changes it."""
    path = Path(path)
    return str(path.stat().st_mtime_ns) if path.exists() else "missing"


def missing_columns(frame: pd.DataFrame, required: list[str]) -> list[str]:
    return [column for column in required if column not in frame.columns]


def validate_customer_data(frame: pd.DataFrame) -> None:
    """Refuse data that would train a meaningless model, naming the problem."""
    if missing := missing_columns(frame, [*FEATURE_COLUMNS, TARGET]):
        raise DataValidationError(f"Missing column(s): {', '.join(missing)}")
    if frame.empty:
        raise DataValidationError("The data set has no rows")
    if (n_missing := int(frame[TARGET].isna().sum())) > 0:
        raise DataValidationError(f"Column {TARGET!r} has {n_missing} missing value(s)")
    rate = float(frame[TARGET].mean())
    low, high = CHURN_RATE_RANGE
    if not low <= rate <= high:
        raise DataValidationError(
            f"Churn rate {rate:.1%} is outside the expected range {low:.0%}-{high:.0%}"
        )
