"""MLflow tracking behind one small class: experiments, runs, their params, metrics,
tags, artifacts and inputs. :class:`pumpfleet.registry.Registry` adds the model registry
on the same client.

Runs are addressed by id (no global active run), so one driver can track many Ray Tune
trials at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pumpfleet.errors import RegistryError


class Tracking:
    """Tracking on one MLflow backend (SQLite by default, or a server)."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        # Every call goes through this client (or names the URIs itself): nothing here
        # touches MLflow's process-wide tracking URI or the environment, so registries on
        # different backends live side by side in one process. MLflow's HTTP retries and
        # timeout come from the environment only: entry points export them from Settings
        # (pumpfleet.settings.apply_engine_env).
        from mlflow import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            # Beside the database, as Settings.artifact_root has it: MLflow's own default
            # is ./mlruns in whatever folder the process happens to run in.
            artifact_root = artifact_root or (db.parent.resolve() / "mlartifacts").as_uri()
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root

    def ping(self) -> None:
        """Check that the tracking server answers (after MLflow's retries with backoff),
        so that a job fails before its work, not after; RegistryError if it does not."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as e:  # requests' and MLflow's errors alike
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RegistryError(f"MLflow at {self.tracking_uri} is unreachable: {first}") from None

    # --- tracking -------------------------------------------------------------------

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, made if there is none yet (two processes may
        both find none: the one whose create fails reads the other's)."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        location = f"{self.artifact_root}/{name}" if self.artifact_root else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def start_run(
        self,
        experiment: str,
        run_name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment(experiment), run_name=run_name, tags=all_tags)
        run_id = str(run.info.run_id)
        if params:
            self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and v == v  # skip None and NaN
        ]
        if rows:
            self.client.log_batch(run_id, metrics=rows)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, obj, artifact_file)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        """Store a local file with the run's artifacts under ``artifact_path``."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_artifact(run_id, str(path), artifact_path)
        except (MlflowException, OSError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RegistryError(f"run {run_id}: could not store {path.name}: {first}") from None

    def artifacts(self, run_id: str, artifact_path: str) -> list[str]:
        """Paths of the run's artifacts under ``artifact_path``."""
        return [str(a.path) for a in self.client.list_artifacts(run_id, artifact_path)]

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_snapshot_input(self, run_id: str, snapshot: Any, pump_class: str) -> None:
        """Record the feature snapshot a model was trained on as the run's dataset input
        (what ``mlflow.log_input`` records): its digest is the snapshot's content hash."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        spec = snapshot.spec(pump_class)
        dataset = Dataset(
            name=f"features-{pump_class}",
            digest=snapshot.id,
            source_type="local" if "://" not in snapshot.root else snapshot.root.split(":")[0],
            source=json.dumps({"uri": snapshot.root, "pump_class": pump_class}),
            schema=json.dumps({"inputs": spec.inputs, "window": spec.window}),
            profile=json.dumps(
                snapshot.manifest.get("summary", {}).get("windows", {}).get(pump_class, {})
            ),
        )
        tags = [InputTag("mlflow.data.context", "training")]
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset, tags=tags)])

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    def run_record(
        self, run_id: str, metrics: tuple[str, ...]
    ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[int, float]]]:
        """A run's params, tags and per-step history of ``metrics``."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as e:
            raise RegistryError(f"run {run_id}: {str(e).splitlines()[0]}") from None
        history = {
            m: {int(p.step): float(p.value) for p in self.client.get_metric_history(run_id, m)}
            for m in metrics
        }
        return dict(run.data.params), dict(run.data.tags), history
