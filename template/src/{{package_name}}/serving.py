"""Serving and batch inference of the registered ``champion`` model.

Both read the model from the registry by alias (``models:/NAME@champion``), so
promoting a new version changes what is served without touching this code.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.types import DataType, Schema

from . import processes
from .config import Settings
from .errors import InputFileNotFoundError, WorkshopError
from .messages import text
from .tracking import CHAMPION_ALIAS, champion_uri, connect

HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 15
PREDICTION_COLUMN = "prediction"


class ModelNotFoundError(WorkshopError, LookupError):
    """No model version carries the alias; the message says how to create one."""


class MissingInputColumnsError(WorkshopError, ValueError):
    """The CSV lacks columns the model's signature requires; the message names them."""


class ModelServerError(WorkshopError, RuntimeError):
    """The model server could not start; the message says why."""


def require_champion(model_name: str) -> str:
    """The champion's ``models:/`` URI, or a clear error when there is none yet."""
    try:
        MlflowClient().get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        raise ModelNotFoundError(
            text("serving.no_champion", model=model_name, alias=CHAMPION_ALIAS)
        ) from None
    return champion_uri(model_name)


def serve_command(model_uri: str, port: int, host: str = HOST) -> list[str]:
    """The ``mlflow models serve`` call; ``local`` reuses this environment, builds none."""
    mlflow_cli = processes.venv_tool("mlflow")
    command = [mlflow_cli, "models", "serve", "-m", model_uri, "--env-manager", "local"]
    return [*command, "-h", host, "-p", str(port)]


def start_model_server(model_uri: str, port: int, tracking_uri: str) -> subprocess.Popen:
    if not processes.port_is_free(port):
        raise ModelServerError(text("serving.port_taken", port=port))
    # A session of its own: stopping the group also stops the uvicorn it spawns.
    environment = processes.venv_environment(MLFLOW_TRACKING_URI=tracking_uri)  # it execs `uvicorn`
    return subprocess.Popen(serve_command(model_uri, port), env=environment, start_new_session=True)


def wait_until_ready(
    process: subprocess.Popen, port: int, timeout: float = READY_TIMEOUT_SECONDS
) -> None:
    """Poll ``/ping`` until the model is loaded; fail if the server dies or takes too long."""
    try:
        processes.wait_until_healthy(process, f"http://{HOST}:{port}/ping", timeout)
    except (processes.ProcessExitedError, processes.HealthTimeoutError) as error:
        raise ModelServerError(text("serving.failed_to_start", error=error)) from None


def stop_model_server(process: subprocess.Popen) -> None:
    """Stop the server and the uvicorn it spawned (its whole process group)."""
    processes.stop_process_groups([process], STOP_TIMEOUT_SECONDS)


@contextmanager
def model_server(model_uri: str, port: int, tracking_uri: str) -> Iterator[str]:
    """Serve ``model_uri`` for the duration of a ``with`` block; yields the base URL."""
    process = start_model_server(model_uri, port, tracking_uri)
    try:
        wait_until_ready(process, port)
        yield f"http://{HOST}:{port}"
    finally:
        stop_model_server(process)


def serve_champion(settings: Settings, port: int | None = None) -> None:
    """Serve the champion in the foreground until Ctrl+C (``make serve``)."""
    connect(settings.mlflow_tracking_uri)
    model_uri = require_champion(settings.model_name)
    port = port or settings.serving_port
    process = start_model_server(model_uri, port, settings.mlflow_tracking_uri)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on SIGTERM too
    url = f"http://{HOST}:{port}/invocations"
    print(text("serving.serving", uri=model_uri, url=url), flush=True)
    try:
        process.wait()
    except KeyboardInterrupt:
        return
    finally:
        stop_model_server(process)
    if process.returncode != 0:
        raise ModelServerError(text("serving.exited", code=process.returncode))


def input_schema(model: mlflow.pyfunc.PyFuncModel) -> Schema | None:
    return model.metadata.get_input_schema()


def required_columns(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """Input columns named in the model's signature (empty when it has none)."""
    schema = input_schema(model)
    return list(schema.input_names()) if schema is not None else []


def check_columns(frame: pd.DataFrame, required: list[str], source: str | Path) -> None:
    if missing := [column for column in required if column not in frame.columns]:
        raise MissingInputColumnsError(
            text("serving.missing_columns", source=source, columns=", ".join(missing))
        )


def model_inputs(model: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The signature's columns, with whole numbers read from a CSV turned into the floats it
    declares (MLflow refuses to convert int64 to float64 by itself)."""
    schema = input_schema(model)
    if schema is None:
        return frame
    floats = {
        spec.name: spec.type.to_pandas()
        for spec in schema.inputs
        if spec.type in (DataType.double, DataType.float)
    }
    return frame[schema.input_names()].astype(floats)


def predict_frame(model: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The input rows plus a ``prediction`` column (extra columns such as ids are kept)."""
    return frame.assign(**{PREDICTION_COLUMN: model.predict(model_inputs(model, frame))})


def predict_csv(input_path: str | Path, output_path: str | Path, model_uri: str) -> pd.DataFrame:
    """Batch inference: read a CSV, check its columns, write it back with predictions."""
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise InputFileNotFoundError(text("serving.input_not_found", path=input_path))
    frame = pd.read_csv(input_path)
    model = mlflow.pyfunc.load_model(model_uri)
    check_columns(frame, required_columns(model), input_path)
    predictions = predict_frame(model, frame)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(output_path, index=False)
    return predictions


def predict_with_champion(settings: Settings, input_path: Path, output_path: Path) -> pd.DataFrame:
    connect(settings.mlflow_tracking_uri)
    return predict_csv(input_path, output_path, require_champion(settings.model_name))
