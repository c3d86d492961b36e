"""The scoring service's real FastAPI app (its doors, routes and error handlers) on a
real loopback socket, without Ray: a replica object of the deployment class as written,
set up by hand with the models, logs and fleet state a test gives it, behind uvicorn in
a thread. For tests whose clients are other processes (edge agents, a browser) or that
need many routes at once; stopped by ``close``."""

from __future__ import annotations

import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from pumpfleet import records
from pumpfleet.ports import free_port as _free_port
from pumpfleet.predlog import PredictionLog
from serve_apps.model_set import ModelSet, ServedClass
from serve_apps.schemas import ScoringConfig
from serve_apps.scoring import PumpScorer


def served_app() -> Any:
    """The app Serve runs for the deployment (a copy of ``http_app.app`` frozen when the
    class was decorated; the replica's methods see it as their ``app``)."""
    cls = PumpScorer.func_or_class  # type: ignore[attr-defined]
    return inspect.getclosurevars(cls.__init__).nonlocals["frozen_app_or_func"]


class _NoRegistry:
    def set_model_tags(self, name: str, tags: dict[str, Any]) -> None:
        pass


class InProcessService:
    """The app on ``url`` with a replica (``scorer``) behind its routes."""

    def __init__(
        self,
        config: ScoringConfig,
        classes: dict[str, ServedClass] | None = None,
        **attributes: Any,
    ) -> None:
        import uvicorn
        from ray import serve

        written = PumpScorer.func_or_class.__mro__[1]  # type: ignore[attr-defined]
        scorer = object.__new__(written)
        scorer._stop = threading.Event()
        scorer.config = config
        scorer.models = ModelSet(_NoRegistry(), config.aliases(), 0.0, config.salt)  # type: ignore[arg-type]
        scorer.models.classes = classes or {}
        scorer.log = PredictionLog(config.predictions_dir, max_rows=10**6)
        scorer.feedback_log = PredictionLog(
            f"{config.predictions_dir.rstrip('/')}-feedback", to_table=records.feedback_table
        )
        scorer._shadow = ThreadPoolExecutor(max_workers=1)
        for name, value in attributes.items():
            setattr(scorer, name, value)
        self.scorer = scorer
        self.app = served_app()
        context = SimpleNamespace(servable_object=scorer)
        self._patch = mock.patch.object(serve, "get_replica_context", lambda: context)
        self._patch.start()
        self.app.state.config = config
        self.app.state.score_one = scorer.score_body  # as the replica's __init__ sets it
        scorer._load_devices()
        port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.close()
                raise RuntimeError("the in-process service did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"

    def reload_devices(self) -> None:
        """Re-read the device book, as a refresh would."""
        self.scorer._load_devices()

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self._patch.stop()
        self.scorer._shadow.shutdown()
        self.scorer._stop.set()


def config(root: Path, **fields: Any) -> ScoringConfig:
    """A config whose log is under ``root``."""
    return ScoringConfig(
        tracking_uri="sqlite:///unused", predictions_dir=str(root / "predictions"), **fields
    )
