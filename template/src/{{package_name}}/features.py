"""Feature engineering: the preprocessing travels inside the model pipeline.

Keeping scaling and encoding in a scikit-learn ``ColumnTransformer`` means the
logged model takes raw customer columns, so serving and batch inference need no
copy of this code.
"""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from .data import CATEGORICAL_FEATURES, FEATURE_COLUMNS, NUMERIC_FEATURES, TARGET


def split_features_target(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Numbers become floats so the model signature accepts missing values at serving time."""
    features = frame[FEATURE_COLUMNS].astype(dict.fromkeys(NUMERIC_FEATURES, "float64"))
    return features, frame[TARGET].astype(int)


def build_preprocessor() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("numeric", StandardScaler(), NUMERIC_FEATURES),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES),
        ]
    )


def train_test_frames(
    frame: pd.DataFrame, test_size: float = 0.2, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Stratified split so that train and test keep the same churn rate."""
    features, target = split_features_target(frame)
    return train_test_split(
        features, target, test_size=test_size, random_state=seed, stratify=target
    )
