"""MLflow behind one small class: the model registry, on the tracking client of
:class:`pumpfleet.tracking.Tracking` (runs, their metrics and artifacts).

Nothing but these two modules imports mlflow.

A registered version is an ONNX model (loadable with onnxruntime anywhere, without the
training code) carrying, as extra files, its feature spec, the torch weights and the
model config it was built from.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pumpfleet.errors import RegistryError
from pumpfleet.features import FeatureSpec
from pumpfleet.health import HealthSpec
from pumpfleet.runtime import Runner, onnx_runner
from pumpfleet.scoring import HealthModel
from pumpfleet.tracking import Tracking

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
STAGING = "staging"  # the version the staging app serves (serve_apps/deploy.py)
SPEC_FILE = "feature_spec.json"
WEIGHTS_FILE = "torch_state.pt"
MODEL_CONFIG_FILE = "model_config.json"


ANOMALY_SUFFIX = "-anomaly"


def model_name(pump_class: str) -> str:
    return f"pumpfleet-{pump_class}"


def anomaly_model_name(pump_class: str) -> str:
    """The registered name of a class's anomaly (health) model."""
    return f"pumpfleet-{pump_class}{ANOMALY_SUFFIX}"


ModelKind = Literal["rul", "anomaly"]
MODEL_KINDS: tuple[ModelKind, ...] = ("rul", "anomaly")


def kind_model_name(pump_class: str, kind: ModelKind = "rul") -> str:
    """The registered name of a class's model of ``kind``."""
    return anomaly_model_name(pump_class) if kind == "anomaly" else model_name(pump_class)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str
    onnx: bytes
    spec: FeatureSpec
    model_config: dict[str, Any]
    weights: bytes  # the torch state dict as torch.save wrote it
    tags: dict[str, str]

    def state_dict(self) -> dict[str, Any]:
        """The torch weights."""
        import io

        import torch

        return dict(torch.load(io.BytesIO(self.weights), weights_only=True))

    def runner(self) -> Runner:
        """The registered ONNX in a CPU session, for :mod:`pumpfleet.scoring`."""
        return onnx_runner(self.onnx)

    def health_model(self) -> HealthModel:
        """An anomaly model as the scoring path takes it: its ONNX, feature spec and the
        health spec it was calibrated with (``model_config["health"]``)."""
        health = HealthSpec.model_validate(self.model_config["health"])
        return HealthModel(self.version, self.spec, health, self.runner())

    def torch_model(self) -> Any:
        """Rebuild the (RUL) torch model from its config and weights."""
        from pumpfleet.models import ModelConfig, build_model

        model = build_model(self.spec.n_channels, ModelConfig(**self.model_config))
        model.load_state_dict(self.state_dict())
        model.eval()
        return model


class Registry(Tracking):
    """Tracking (:class:`pumpfleet.tracking.Tracking`) and the model registry on one MLflow
    backend (SQLite by default, or a server)."""

    def delete_version(self, name: str, version: str) -> None:
        """Remove a model version (a registration that could not be completed)."""
        self.client.delete_model_version(name, version)

    # --- models ---------------------------------------------------------------------

    def log_model(
        self,
        run_id: str,
        onnx_bytes: bytes,
        spec: FeatureSpec,
        state_dict: dict[str, Any],
        model_config: dict[str, Any],
    ) -> str:
        """Log an ONNX model with its spec and torch weights; returns the model URI."""
        import onnx
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for name, write in [
                (SPEC_FILE, lambda p: p.write_text(spec.to_json())),
                (MODEL_CONFIG_FILE, lambda p: p.write_text(json.dumps(model_config))),
                (WEIGHTS_FILE, lambda p: torch.save(state_dict, p)),
            ]:
                path = Path(tmp) / name
                write(path)
                files.append(str(path))
            model_id = self._log_onnx_model(run_id, onnx.load_from_string(onnx_bytes), files, tmp)
        return f"models:/{model_id}"

    def _log_onnx_model(self, run_id: str, model: Any, extra_files: list[str], tmp: str) -> str:
        """What ``mlflow.onnx.log_model`` does, through this registry's client: that one
        resolves the backend from the process-wide tracking URI and the active run. A
        logged model (MLflow 3) of the run, its files saved locally and uploaded; returns
        its id."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model
        from mlflow.onnx import save_model

        run = self.client.get_run(run_id)
        logged = self.client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name="model",
            source_run_id=run_id,
            params={str(k): str(v) for k, v in run.data.params.items()},
        )
        try:
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            local = str(Path(tmp) / "model")
            save_model(
                model,
                local,
                mlflow_model=Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=run_id,
                    model_id=logged.model_id,
                ),
                extra_files=extra_files,
                pip_requirements=["onnxruntime==1.32.0", "numpy"],
                onnx_execution_providers=["CPUExecutionProvider"],
                save_as_external_data=False,
            )
            self.client.log_model_artifacts(logged.model_id, local)
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return str(logged.model_id)

    def register(self, model_uri: str, name: str, tags: dict[str, Any] | None = None) -> str:
        """Register a logged model as a new version of ``name``; returns the version."""
        if self.client.search_registered_models(filter_string=f"name = '{name}'") == []:
            self.client.create_registered_model(name)
        # A tracking server (unlike SQLite) refuses a models:/ source without its id.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None
        source, run_id = model_uri, None
        if model_id is not None and not self.tracking_uri.startswith(("http://", "https://")):
            # MLflow's SQL registry store resolves a models:/<id> source through the
            # process-wide tracking URI; resolve it here, through this registry's client.
            logged = self.client.get_logged_model(model_id)
            source, run_id = str(logged.artifact_location), logged.source_run_id
        mv = self.client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            model_id=model_id,
        )
        return str(mv.version)

    def register_as(
        self, model_uri: str, name: str, alias: str, tags: dict[str, Any] | None = None
    ) -> str:
        """Register a new version and point ``alias`` at it, or leave nothing: a version
        whose alias could not be set (the server went away in between) is deleted, so no
        half-registered model is left for anyone to pick up."""
        version = self.register(model_uri, name, tags)
        try:
            self.set_alias(name, alias, version)
        except Exception:
            self.delete_version(name, version)
            raise
        return version

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def set_version_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(name, version, k, str(v))

    def _names(self) -> list[str]:
        models = self.client.search_registered_models(filter_string="name LIKE 'pumpfleet-%'")
        return [str(m.name).removeprefix("pumpfleet-") for m in models]

    def classes_by_kind(self) -> tuple[list[str], list[str]]:
        """The pump classes with a registered RUL model and those with an anomaly model,
        from one registry request."""
        names = self._names()
        rul = sorted(n for n in names if not n.endswith(ANOMALY_SUFFIX))
        anomaly = sorted(
            n.removesuffix(ANOMALY_SUFFIX) for n in names if n.endswith(ANOMALY_SUFFIX)
        )
        return rul, anomaly

    def classes(self) -> list[str]:
        """The pump classes with a registered RUL model (``pumpfleet-<class>``); anomaly
        models (``pumpfleet-<class>-anomaly``) are not among them."""
        return self.classes_by_kind()[0]

    def anomaly_classes(self) -> list[str]:
        """The pump classes with a registered anomaly model (``pumpfleet-<class>-anomaly``)."""
        return self.classes_by_kind()[1]

    def version_by_alias(self, name: str, alias: str) -> str | None:
        """The version behind ``name@alias``, or None if the alias (or model) is unset."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def aliases(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException:
            return {}
        return {str(k): str(v) for k, v in rm.aliases.items()}

    def model_state(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """``name``'s aliases (alias → version) and its registered-model tags, in one
        request ({} and {} if there is no such model)."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException:
            return {}, {}
        aliases = {str(k): str(v) for k, v in rm.aliases.items()}
        return aliases, {str(k): str(v) for k, v in (rm.tags or {}).items()}

    def set_model_tags(self, name: str, tags: dict[str, Any]) -> None:
        """Tags on the registered model itself (not on one version)."""
        for k, v in tags.items():
            self.client.set_registered_model_tag(name, k, str(v))

    def load(self, name: str, alias: str, dst: Path | None = None) -> LoadedModel:
        """Download ``name@alias``: its ONNX, feature spec and weights."""
        version = self.version_by_alias(name, alias)
        if version is None:
            raise RegistryError(f"no model version {name}@{alias} in {self.tracking_uri}")
        return self.load_version(name, version, dst)

    # --- lifecycle: versions by number, alias removal, audit tags --------------------

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags of version ``version`` of ``name``; RegistryError if there is none."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(f"{name} has no version {version!r}") from None
        return {str(k): str(v) for k, v in (mv.tags or {}).items()}

    def versions(self, name: str) -> dict[str, dict[str, str]]:
        """Every version of ``name`` with its tags, by version number."""
        found = self.client.search_model_versions(filter_string=f"name = '{name}'")
        return {
            str(mv.version): {str(k): str(v) for k, v in (mv.tags or {}).items()}
            for mv in sorted(found, key=lambda mv: int(mv.version))
        }

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags of a tracking run ({} if the run is gone)."""
        from mlflow.exceptions import MlflowException

        try:
            return {str(k): str(v) for k, v in self.client.get_run(run_id).data.tags.items()}
        except MlflowException:
            return {}

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def load_version(self, name: str, version: str, dst: Path | None = None) -> LoadedModel:
        """Download version ``version`` of ``name`` (as :meth:`load` does an alias) into
        memory; its files are kept under ``dst`` if given (else a temporary folder that
        is removed: a replica that follows promotions for months leaves nothing behind)."""
        self.version_tags(name, version)  # a clear error for an unknown version
        if dst is None:
            with tempfile.TemporaryDirectory(prefix="pumpfleet-model-") as tmp:
                return self.load_version(name, version, Path(tmp))
        mv = self.client.get_model_version(name, str(version))
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        # From the version's storage location, as MLflow's models:/ repository does, but
        # with this registry's URIs: that one resolves models:/ through the process-wide
        # registry URI.
        source = self.client.get_model_version_download_uri(name, str(mv.version))
        repo = get_artifact_repository(
            source, tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
        )
        target = dst / f"{name}-{mv.version}"
        target.mkdir(parents=True, exist_ok=True)
        path = Path(repo.download_artifacts("", dst_path=str(target)))
        extra = path / "extra_files"
        return LoadedModel(
            name=name,
            version=str(mv.version),
            run_id=str(mv.run_id),
            onnx=(path / "model.onnx").read_bytes(),
            spec=FeatureSpec.from_json((extra / SPEC_FILE).read_text()),
            model_config=json.loads((extra / MODEL_CONFIG_FILE).read_text()),
            weights=(extra / WEIGHTS_FILE).read_bytes(),
            tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
        )
