"""MLflow helpers: reach the server, log a candidate, register and promote the best.

The registry uses aliases (``champion``) rather than the stages MLflow removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version

import mlflow
import pandas as pd
import requests
import skops.io
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.utils.credentials import read_mlflow_creds
from sklearn.pipeline import Pipeline

from .config import Settings
from .errors import WorkshopError
from .evaluation import PRIMARY_METRIC, confusion_matrix_figure
from .messages import text
from .training import model_params

CHAMPION_ALIAS = "champion"


class TrackingServerUnreachableError(WorkshopError, RuntimeError):
    """The MLflow server cannot be reached; the message says how to start it."""


class TrackingLoginRefusedError(WorkshopError, PermissionError):
    """A server with logins (the classroom server) refused the one in .env."""


def check_tracking_server(uri: str, timeout: float = 3.0) -> None:
    """Fail fast with a clear message, instead of MLflow's minutes of retries.

    ``/health`` answers everyone, so a server with logins is then asked for one
    experiment with the login MLflow's client sends (MLFLOW_TRACKING_USERNAME and
    _PASSWORD from .env, or ~/.mlflow/credentials on a class worker): a refused login
    is named now, not deep in a traceback.
    """
    if not uri.startswith(("http://", "https://")):
        return  # a local file or database store needs no server
    base = uri.rstrip("/")
    user, password = read_mlflow_creds()
    try:
        requests.get(f"{base}/health", timeout=timeout).raise_for_status()
        answer = requests.get(
            f"{base}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=(user, password) if user and password else None,
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise TrackingServerUnreachableError(
            text("tracking.unreachable", uri=uri, error=type(error).__name__)
        ) from None
    if answer.status_code == 401:
        raise TrackingLoginRefusedError(text("tracking.login_refused", uri=uri, user=user or "-"))


def connect(tracking_uri: str) -> None:
    """Point MLflow at the server, failing fast when it is down.

    MLflow retries each request for about four minutes by default. Retrying is the
    orchestrators' job, where students set and watch it (a Prefect task's retries), so
    a request gives up after about 12 s unless MLFLOW_HTTP_REQUEST_MAX_RETRIES says else.
    """
    check_tracking_server(tracking_uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    mlflow.set_tracking_uri(tracking_uri)


@contextmanager
def tracking_server_lost_is_named() -> Iterator[None]:
    """Turn an MLflow failure into the clear error when the server went away mid-run.

    MLflow reports a lost server as a chain of retries and URLs; asking its health
    endpoint tells a vanished server from a genuine MLflow error, re-raised as it is.
    Works as a decorator too.
    """
    try:
        yield
    except (MlflowException, requests.RequestException):
        check_tracking_server(mlflow.get_tracking_uri())
        raise


def setup_tracking(settings: Settings) -> str:
    """Point MLflow at the project's server and make its experiment the active one.

    Returns the experiment's id. Every entry point that logs runs (the CLI, each
    orchestrator, the organized notebook) starts here.
    """
    connect(settings.mlflow_tracking_uri)
    return use_experiment(settings.experiment_name)


def use_experiment(name: str) -> str:
    """Make the experiment ``name`` the active one (created if needed); returns its id."""
    experiment = mlflow.set_experiment(name)
    # When another process creates the experiment at the same moment, MLflow returns it
    # without making it active, and runs land in "Default". Set by id, it always is.
    return mlflow.set_experiment(experiment_id=experiment.experiment_id).experiment_id


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where a student opens the run in the MLflow UI."""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def sklearn_internal_types(model: Pipeline) -> list[str]:
    """scikit-learn's own types that skops does not trust by default (a forest's ``Tree``).

    MLflow saves scikit-learn models with skops, which refuses to load unknown
    types; trusting only ``sklearn.*`` keeps that protection for anything else.
    """
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return [name for name in untrusted if name.startswith("sklearn.")]


def model_requirements() -> list[str]:
    """What loading the model needs, pinned to the versions it was trained with.

    Declaring them skips MLflow's inference, which imports the model in a
    subprocess and costs over ten seconds per logged model.
    """
    return [
        f"mlflow=={mlflow.__version__}",
        *mlflow.sklearn.get_default_pip_requirements(),
        f"skops=={version('skops')}",
    ]


@dataclass(frozen=True)
class LoggedCandidate:
    name: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]


@tracking_server_lost_is_named()
def log_candidate(
    name: str,
    model: Pipeline,
    metrics: dict[str, float],
    features_test: pd.DataFrame,
    target_test: pd.Series,
    tags: dict[str, str] | None = None,
) -> LoggedCandidate:
    """Log one trained model as a run: params, metrics, plot, feature list, model."""
    with mlflow.start_run(run_name=name, tags={"model_type": name, **(tags or {})}) as run:
        mlflow.log_params(model_params(model))
        mlflow.log_metrics(metrics)
        mlflow.log_figure(
            confusion_matrix_figure(model, features_test, target_test), "confusion_matrix.png"
        )
        mlflow.log_dict({"features": list(features_test.columns)}, "features.json")
        info = log_sklearn_model(model, features_test.head(5))
    return LoggedCandidate(name, run.info.run_id, info.model_uri, metrics)


def log_sklearn_model(model: Pipeline, example: pd.DataFrame) -> ModelInfo:
    """Log the model in the active run as ``model``, ready to serve.

    Its signature comes from ``example``, the skops types it trusts are scikit-learn's own,
    and its requirements are declared: the three things ``mlflow.sklearn.log_model``
    would otherwise guess slowly, warn about or refuse.
    """
    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
        skops_trusted_types=sklearn_internal_types(model),
        pip_requirements=model_requirements(),
    )


@dataclass(frozen=True)
class Promotion:
    model_name: str
    version: str
    promoted: bool
    previous_score: float | None

    @property
    def summary(self) -> str:
        """The sentence every entry point prints at the end of a training run."""
        verdict = "tracking.new_champion" if self.promoted else "tracking.not_champion"
        return text(verdict, model=self.model_name, version=self.version)


def champion_score(client: MlflowClient, model_name: str, metric: str) -> float | None:
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None  # no registered model or no champion yet
    return client.get_run(version.run_id).data.metrics.get(metric)


@tracking_server_lost_is_named()
def register_and_promote(
    candidate: LoggedCandidate, model_name: str, metric: str = PRIMARY_METRIC
) -> Promotion:
    """Register the candidate and move ``champion`` to it when it beats the current one."""
    client = MlflowClient()
    previous = champion_score(client, model_name, metric)
    version = mlflow.register_model(candidate.model_uri, model_name).version
    promoted = previous is None or candidate.metrics[metric] > previous
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(model_name, str(version), promoted, previous)


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION_ALIAS}"
