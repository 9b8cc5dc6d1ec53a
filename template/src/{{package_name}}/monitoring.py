"""Monitoring: score a new batch with the champion and compare it with the training data.

A batch is a CSV of new customers in ``data/batches/`` (no ``churned`` column: their
outcome is not known yet). ``monitor_batch`` scores the newest one with
``models:/NAME@champion``, writes the predictions, measures drift per feature and on
the predictions, checks the data's quality, and logs all of it to MLflow as one run of
the monitoring experiment, with an HTML report a student opens in the MLflow UI.

The statistics and the report live here once; the CLI (``make monitor``), the Prefect
flow and the Dagster asset only call ``monitor_batch`` and ``alert_on_drift``.

Drift per feature is the population stability index (PSI) between the training data and
the batch: shares of each category, or of each decile of the training values for a
number. PSI does not grow with the sample size the way a p-value shrinks, so a clean
batch of 100,000 rows is not flagged for differences nobody cares about. The usual
reading: below 0.1 stable, 0.1-0.2 moving, above 0.2 shifted. The report also gives
the two-sample Kolmogorov-Smirnov (numbers) or chi-square (categories) p-value.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from scipy import stats

from .config import Settings
from .data import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    NUMERIC_FEATURES,
    load_customer_data,
    missing_columns,
    newest_batch,
    save_customer_data,
    text_in_numeric_columns,
)
from .errors import InputFileNotFoundError, WorkshopError
from .messages import text
from .notifications import notify
from .serving import PREDICTION_COLUMN, model_inputs, require_champion
from .tracking import (
    CHAMPION_ALIAS,
    connect,
    run_url,
    tracking_server_lost_is_named,
    use_experiment,
)

PSI_DRIFTED = 0.2  # a feature whose PSI reaches this has shifted (the usual rule of thumb)
QUANTILE_BINS = 10  # numbers are compared by the deciles of their training values
REPORT_FILE = "drift_report.html"


class BatchError(WorkshopError, ValueError):
    """The batch cannot be monitored (empty, columns missing); the message says why."""


# --- Batches: new customers arriving after training ---------------------------------


def read_batch(path: Path) -> pd.DataFrame:
    """The batch, refused with the reason when it cannot be scored."""
    if not path.is_file():
        raise InputFileNotFoundError(text("monitoring.batch_not_found", path=path))
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise BatchError(text("monitoring.batch_empty", path=path)) from None
    if missing := missing_columns(frame, FEATURE_COLUMNS):
        columns = ", ".join(missing)
        raise BatchError(text("monitoring.batch_missing_columns", path=path, columns=columns))
    if frame.empty:
        raise BatchError(text("monitoring.batch_no_rows", path=path))
    if numeric := text_in_numeric_columns(frame):
        columns = ", ".join(numeric)
        raise BatchError(text("monitoring.batch_text_in_numeric", path=path, columns=columns))
    return frame


def complete_rows(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """The rows the model can score: a missing value is reported, not guessed."""
    complete = frame.dropna(subset=FEATURE_COLUMNS)
    if complete.empty:
        raise BatchError(text("monitoring.batch_incomplete", path=source))
    return complete


# --- Statistics: one function per measure, pure (the project's tests call them) ------


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins."""
    reference = np.clip(reference_shares, 1e-4, None)
    current = np.clip(current_shares, 1e-4, None)
    return float(np.sum((current - reference) * np.log(current / reference)))


def numeric_bins(reference: pd.Series) -> np.ndarray:
    """Bin edges at the training deciles, open at both ends (values beyond them still count)."""
    inner = np.unique(np.quantile(reference.dropna(), np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def shares(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(values.dropna(), bins=edges)
    return counts / max(counts.sum(), 1)


def category_shares(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each category seen in either series, in the same order for both."""
    categories = sorted(set(reference.dropna()) | set(current.dropna()), key=str)
    reference_shares = reference.value_counts(normalize=True).reindex(categories, fill_value=0)
    current_shares = current.value_counts(normalize=True).reindex(categories, fill_value=0)
    return reference_shares.to_numpy(float), current_shares.to_numpy(float)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str  # "numeric" or "categorical"
    psi: float
    test: str  # the statistical test behind p_value
    p_value: float
    reference: str  # a one-phrase summary of each side, for the report
    current: str

    @property
    def drifted(self) -> bool:
        return self.psi >= PSI_DRIFTED


def numeric_drift(feature: str, reference: pd.Series, current: pd.Series) -> FeatureDrift:
    edges = numeric_bins(reference)
    p_value = stats.ks_2samp(reference.dropna(), current.dropna()).pvalue
    return FeatureDrift(
        feature,
        "numeric",
        psi(shares(reference, edges), shares(current, edges)),
        "Kolmogorov-Smirnov",
        float(p_value),
        text("monitoring.report.mean", value=reference.mean()),
        text("monitoring.report.mean", value=current.mean()),
    )


def top_category(values: pd.Series) -> str:
    counts = values.value_counts(normalize=True)
    return (
        f"{counts.index[0]} {counts.iloc[0]:.0%}" if len(counts) else text("monitoring.no_category")
    )


def categorical_drift(feature: str, reference: pd.Series, current: pd.Series) -> FeatureDrift:
    reference_shares, current_shares = category_shares(reference, current)
    counts = np.vstack(
        [reference_shares * reference.notna().sum(), current_shares * current.notna().sum()]
    )
    counts = counts[:, counts.sum(axis=0) > 0]
    p_value = stats.chi2_contingency(counts).pvalue if counts.shape[1] > 1 else 1.0
    return FeatureDrift(
        feature,
        "categorical",
        psi(reference_shares, current_shares),
        "chi-square",
        float(p_value),
        top_category(reference),
        top_category(current),
    )


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame) -> list[FeatureDrift]:
    """Drift of every model input, numbers and categories each with their measure."""
    return [
        numeric_drift(name, reference[name], current[name])
        if name in NUMERIC_FEATURES
        else categorical_drift(name, reference[name].astype(str), current[name].astype(str))
        for name in FEATURE_COLUMNS
    ]


@dataclass(frozen=True)
class DataQuality:
    rows: int
    nulls: dict[str, int]  # column: count, only columns that have some
    out_of_range: dict[str, int]  # numbers beyond the training range, categories never seen

    @property
    def problems(self) -> list[str]:
        return [
            text("monitoring.missing_values", column=column, count=count)
            for column, count in self.nulls.items()
        ] + [
            text("monitoring.out_of_range", column=column, count=count)
            for column, count in self.out_of_range.items()
        ]


def data_quality(reference: pd.DataFrame, batch: pd.DataFrame) -> DataQuality:
    """Missing values, and values the model never saw in training (it extrapolates there)."""
    nulls = {name: int(batch[name].isna().sum()) for name in FEATURE_COLUMNS}
    outside = {}
    for name in NUMERIC_FEATURES:
        low, high = reference[name].min(), reference[name].max()
        outside[name] = int(((batch[name] < low) | (batch[name] > high)).sum())
    for name in CATEGORICAL_FEATURES:
        known = set(reference[name].dropna())
        outside[name] = int((~batch[name].isin(known) & batch[name].notna()).sum())
    return DataQuality(
        rows=len(batch),
        nulls={name: count for name, count in nulls.items() if count},
        out_of_range={name: count for name, count in outside.items() if count},
    )


@dataclass(frozen=True)
class DriftReport:
    batch: str
    threshold: float  # share of drifted features that raises the alert
    features: list[FeatureDrift]
    prediction: FeatureDrift
    quality: DataQuality
    champion: str = ""  # the model version that scored the batch
    links: dict[str, str] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        return [drift.feature for drift in self.features if drift.drifted]

    @property
    def drift_share(self) -> float:
        return len(self.drifted_features) / len(self.features)

    @property
    def drift_detected(self) -> bool:
        return self.drift_share >= self.threshold

    @property
    def summary(self) -> str:
        """The one line every entry point prints."""
        verdict = text("monitoring.drift" if self.drift_detected else "monitoring.no_drift")
        drifted = ", ".join(self.drifted_features)
        moved = text("monitoring.moved", features=drifted) if drifted else ""
        nulls, outside = sum(self.quality.nulls.values()), sum(self.quality.out_of_range.values())
        quality = (
            text("monitoring.quality", nulls=nulls, outside=outside) if nulls + outside else ""
        )
        summary = text(
            "monitoring.summary",
            batch=self.batch,
            verdict=verdict,
            drifted=len(self.drifted_features),
            features=len(self.features),
            share=self.drift_share,
            threshold=self.threshold,
            moved=moved,
            current=self.prediction.current,
            reference=self.prediction.reference,
        )
        return summary + quality

    def metrics(self) -> dict[str, float]:
        """What MLflow charts across batches: one value per measure."""
        per_feature = {f"psi_{drift.feature}": drift.psi for drift in self.features}
        return {
            "drift_share": self.drift_share,
            "drifted_features": float(len(self.drifted_features)),
            "prediction_psi": self.prediction.psi,
            "rows": float(self.quality.rows),
            "null_values": float(sum(self.quality.nulls.values())),
            "out_of_range_values": float(sum(self.quality.out_of_range.values())),
            **per_feature,
        }

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "drifted_features": self.drifted_features,
            "drift_share": self.drift_share,
            "drift_detected": self.drift_detected,
        }


def compare(
    reference: pd.DataFrame,
    reference_predictions: pd.Series,
    batch: pd.DataFrame,
    batch_predictions: pd.Series,
    threshold: float,
    batch_name: str = "batch",
) -> DriftReport:
    """The whole comparison of a scored batch with the scored training data."""
    reference_predictions, batch_predictions = (
        reference_predictions.dropna(),
        batch_predictions.dropna(),
    )
    prediction = categorical_drift(
        text("monitoring.report.predicted_churn"),
        reference_predictions.astype(int).map({0: "stays", 1: "churns"}),
        batch_predictions.astype(int).map({0: "stays", 1: "churns"}),
    )
    rates = f"{reference_predictions.mean():.1%}", f"{batch_predictions.mean():.1%}"
    prediction = replace(prediction, reference=rates[0], current=rates[1])
    return DriftReport(
        batch=batch_name,
        threshold=threshold,
        features=feature_drift(reference, batch),
        prediction=prediction,
        quality=data_quality(reference, batch),
    )


# --- The report: one HTML page, opened from the run's Artifacts tab ------------------

REPORT_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:60em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
    ".drift{background:#fdd}.ok{background:#dfd}"
)


def drift_row(drift: FeatureDrift) -> str:
    status = text("monitoring.report.drifted" if drift.drifted else "monitoring.report.stable")
    cells = [
        drift.feature,
        drift.kind,
        drift.reference,
        drift.current,
        f"{drift.psi:.3f}",
        f"{drift.test} p={drift.p_value:.2g}",
        status,
    ]
    css = "drift" if drift.drifted else "ok"
    return f"<tr class='{css}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def render_html(report: DriftReport) -> str:
    """A self-contained page: verdict, drift per feature and prediction, data quality."""
    names = ["feature", "kind", "training", "batch", "test", "status"]
    columns = [text(f"monitoring.report.{name}") for name in names]
    columns.insert(4, "PSI")
    header = "<tr>" + "".join(f"<th>{html.escape(column)}</th>" for column in columns) + "</tr>"
    rows = "".join(drift_row(drift) for drift in [*report.features, report.prediction])
    problems = report.quality.problems or [text("monitoring.report.no_problem")]
    links = "".join(
        f"<li>{html.escape(name)}: <a href='{html.escape(url)}'>{html.escape(url)}</a></li>"
        for name, url in report.links.items()
    )
    verdict_class = "drift" if report.drift_detected else "ok"
    title = html.escape(text("monitoring.report.title", batch=report.batch))
    champion = report.champion or text("monitoring.report.the_champion")
    rule = text(
        "monitoring.report.rule", champion=champion, psi=PSI_DRIFTED, threshold=report.threshold
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{REPORT_STYLE}</style></head><body><h1>{title}</h1>"
        f"<p class='{verdict_class}'>{html.escape(report.summary)}</p>"
        f"<p>{html.escape(rule)}</p>"
        f"<h2>{html.escape(text('monitoring.report.per_feature'))}</h2>"
        f"<table>{header}{rows}</table>"
        f"<h2>{html.escape(text('monitoring.report.quality', rows=report.quality.rows))}</h2><ul>"
        + "".join(f"<li>{html.escape(problem)}</li>" for problem in problems)
        + f"</ul><ul>{links}</ul></body></html>"
    )


# --- The monitoring run in MLflow --------------------------------------------------


@dataclass(frozen=True)
class MonitoringResult:
    batch: Path
    report: DriftReport
    predictions: Path
    run_id: str
    run_url: str

    @property
    def drift_detected(self) -> bool:
        return self.report.drift_detected


@contextmanager
def monitoring_run(batch: Path, tags: dict[str, str] | None) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run per batch; a known failure marks it FAILED with the reason as a tag,
    so the UI shows why (MLflow itself sets FAILED when the block raises)."""
    with mlflow.start_run(run_name=batch.stem, tags={"batch": batch.name, **(tags or {})}) as run:
        try:
            yield run
        except WorkshopError as error:
            note = text("monitoring.failed_note", error=error)
            mlflow.set_tags({"error": str(error), "mlflow.note.content": note})
            raise


def champion_version(model_name: str) -> str:
    version = MlflowClient().get_model_version_by_alias(model_name, CHAMPION_ALIAS).version
    return text("monitoring.version", model=model_name, version=version)


def score(model: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame) -> pd.Series:
    """Predictions for ``frame``'s rows; rows with a missing value get none (NaN)."""
    scorable = frame.dropna(subset=FEATURE_COLUMNS)
    predictions = np.asarray(model.predict(model_inputs(model, scorable))).astype(int)
    return pd.Series(predictions, index=scorable.index).reindex(frame.index).astype("Int64")


def predictions_path(settings: Settings, batch: Path) -> Path:
    return settings.predictions_dir / f"{batch.stem}_predictions.csv"


@tracking_server_lost_is_named()
def monitor_batch(
    settings: Settings, batch: Path | None = None, tags: dict[str, str] | None = None
) -> MonitoringResult:
    """Score ``batch`` (default: the newest) with the champion, compare, log to MLflow."""
    connect(settings.mlflow_tracking_uri)
    batch = Path(batch) if batch else newest_batch(settings.batch_dir)
    experiment_id = use_experiment(settings.monitoring_experiment)
    with monitoring_run(batch, tags) as run:
        run_id = run.info.run_id
        frame = read_batch(batch)
        complete_rows(frame, batch)
        model = mlflow.pyfunc.load_model(require_champion(settings.model_name))
        reference = load_customer_data(settings.data_path)
        batch_predictions = score(model, frame)
        report = replace(
            compare(
                reference,
                score(model, reference),
                frame,
                batch_predictions,
                settings.drift_threshold,
                batch.name,
            ),
            champion=champion_version(settings.model_name),
            links={"MLflow run": run_url(settings.mlflow_ui_url, experiment_id, run_id)},
        )
        output = predictions_path(settings, batch)
        save_customer_data(frame.assign(**{PREDICTION_COLUMN: batch_predictions}), output)
        log_report(report, output)
    return MonitoringResult(batch, report, output, run_id, report.links["MLflow run"])


def log_report(report: DriftReport, predictions: Path) -> None:
    mlflow.log_params(
        {"champion": report.champion, "threshold": report.threshold, "psi_drifted": PSI_DRIFTED}
    )
    mlflow.log_metrics(report.metrics())
    mlflow.set_tags(
        {
            "drift_detected": str(report.drift_detected).lower(),
            "drifted_features": ",".join(report.drifted_features),
            "mlflow.note.content": report.summary,
        }
    )
    mlflow.log_text(render_html(report), REPORT_FILE)
    mlflow.log_text(json.dumps(report.to_dict(), indent=2), "drift_report.json")
    mlflow.log_artifact(str(predictions))


# --- Alert ---------------------------------------------------------------------------


def alert_on_drift(result: MonitoringResult, retraining: str) -> bool:
    """Send the drift alert (Discord/Slack) when drift crossed the threshold.

    ``retraining`` says what happens next (which run was started), so the message
    tells the reader whether to act. Returns whether drift was detected.
    """
    if not result.drift_detected:
        return False
    notify(
        text("monitoring.alert_title", batch=result.batch.name),
        "\n".join(
            [result.report.summary, retraining, text("monitoring.alert_report", url=result.run_url)]
        ),
        success=False,
    )
    return True
