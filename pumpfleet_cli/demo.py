"""The whole loop on a small simulated fleet, on embedded defaults:
simulate → ingest → train → evaluate → health models → export → serve → score over HTTP
(a sensor drift on one class partway through) → monitor → the alert's retrain on new data → A/B on
post-drift data → promotion by the gates.

    python -m ray_jobs.demo
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
import ray

from pumpfleet import storage
from pumpfleet.errors import DataError
from pumpfleet.evaluation_run import run_evaluate
from pumpfleet.physics import runs_as_new
from pumpfleet.ports import free_port
from pumpfleet.predlog import read_log
from pumpfleet.search_space import SearchSpace
from pumpfleet.settings import Settings, apply_engine_env
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import open_snapshot
from pumpfleet.windows import WindowConfig
from pumpfleet_cli.demo_fleet import work_list_after_scoring
from pumpfleet_cli.demo_loop import (
    DRIFT_CHANNEL,
    DRIFT_CLASS,
    DRIFT_FACTOR,
    InProcessJobs,
    closed_loop,
    drift_harm,
)
from ray_jobs._ray import init_ray
from ray_jobs.ingest import ingest_and_log
from ray_jobs.monitor import run_monitor
from ray_jobs.train import run_train
from serve_apps.security import API_KEY_HEADER, Secrets, digest, new_key

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    pumps: int = 48
    days: int = 60
    seed: int = 0
    requests_per_class: int = 150
    challenger_weight: float = 0.3
    port: int | None = None
    epochs: int = 8
    health_epochs: int = 3
    steps: list[tuple[str, float]] = field(default_factory=list)


def drift_class(settings: Settings, served: list[str]) -> str | None:
    """Where the demo shifts motor temperature: ESP, unless the gates kept ESP out; then
    the served class whose champion the shift hurts most (every class has a motor
    temperature; a shift a model ignores would leave the retrain nothing to win)."""
    if DRIFT_CLASS in served:
        return DRIFT_CLASS
    if not served:
        return None
    harm = {c: drift_harm(settings, c, DRIFT_CHANNEL, DRIFT_FACTOR) for c in served}
    return max(sorted(harm), key=lambda c: harm[c])


def _failures(settings: Settings) -> dict[str, np.ndarray]:
    """The simulated fleet's failure times per pump, sorted."""
    events = pd.read_parquet(storage.join(settings.data_uri, "events", "events.parquet"))
    failed = events[events["event_type"] == "failure"].sort_values("timestamp")
    times = _naive_ms(failed["timestamp"])
    pumps = failed["pump_id"].to_numpy()
    return {str(p): times[pumps == p] for p in np.unique(pumps)}


def _naive_ms(times: Any) -> np.ndarray:
    """UTC times as numpy datetime64[ms]."""
    return (
        pd.to_datetime(pd.Series(times), utc=True).dt.tz_localize(None).to_numpy("datetime64[ms]")
    )


def _requests(
    settings: Settings, n_per_class: int, seed: int, served: list[str], drifted: str | None
) -> list[dict[str, Any]]:
    """Scoring requests from the fleet's own windows (every pump is in service), for the
    classes that have a champion; ``drifted``'s motor temperature reads high."""
    snap = open_snapshot(settings.features_uri)
    failures = _failures(settings)
    rng = np.random.default_rng(seed)
    out = []
    for cls in [c for c in snap.classes if c in served]:
        spec = snap.spec(cls)
        parts = [snap.load(cls, s) for s in ("train", "val", "holdout")]
        raw = np.concatenate([p[0] for p in parts])
        pumps = np.concatenate([p[1]["pump_id"] for p in parts])
        # normal operation: the pump still runs as new (before its next failure's P-F)
        ends = np.concatenate([_naive_ms(p[1]["end_time"]) for p in parts])
        normal = runs_as_new(pumps, ends, failures, ends.max())
        for i in rng.choice(len(raw), size=min(n_per_class, len(raw)), replace=False):
            window = raw[i].copy()
            if cls == drifted:
                window[:, spec.channels.index(DRIFT_CHANNEL)] *= DRIFT_FACTOR
            readings = {
                c: [None if np.isnan(v) else round(float(v), 4) for v in window[:, j]]
                for j, c in enumerate(spec.inputs)
            }
            body = {"pump_id": str(pumps[i]), "pump_class": cls, "readings": readings}
            out.append({**body, NORMAL: bool(normal[i])})
    return out


def _story_requests(
    settings: Settings, cfg: DemoConfig, served: list[str]
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The class that drifts, and the requests before and after its drift: partway
    through, its sensors start reading high (the first requests are as the fleet was, the
    later ones carry the drift)."""
    drifted = drift_class(settings, served)
    if drifted is None:
        raise DataError("no class passed the promotion gates: nothing to serve")
    calm = _requests(settings, cfg.requests_per_class, cfg.seed, served, None)
    # twice as many after: enough chunks for the alert's 2 in a row to show
    later = _requests(settings, 2 * cfg.requests_per_class, cfg.seed + 1, served, drifted)
    return drifted, calm, later


# The demo's own mark on a request (stripped before it is sent): the window's pump still
# runs as new (pumpfleet.physics.runs_as_new), so a health flag on it is a false alarm.
NORMAL = "_normal"


BAD_REQUESTS: list[dict[str, Any]] = [
    {"pump_id": "esp-x", "pump_class": "submarine", "readings": {}},
    {"pump_class": "esp", "readings": {}},
    {"pump_id": "esp-y", "pump_class": "esp", "readings": {"motor_temp": [1.0, 2.0]}},
]


@dataclass
class Sent:
    """What the requests got: arms, HTTP status codes, and per class the windows the
    health model scored and those it flagged."""

    arms: Counter[str] = field(default_factory=Counter)
    codes: Counter[int] = field(default_factory=Counter)
    health: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    normal: Counter[str] = field(default_factory=Counter)  # normal-operation windows scored
    false_flags: Counter[str] = field(default_factory=Counter)  # and flagged


def _send(url: str, reqs: list[dict[str, Any]], api_key: str) -> Sent:
    sent = Sent()
    headers = {API_KEY_HEADER: api_key}
    with httpx.Client(base_url=url, timeout=30.0, headers=headers) as client:

        def one(req: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
            body = {k: v for k, v in req.items() if k != NORMAL}
            r = client.post("/v1/score", json=body)
            return r.status_code, r.json() if r.status_code == 200 else {}, bool(req.get(NORMAL))

        with ThreadPoolExecutor(max_workers=8) as pool:
            for code, out, normal in pool.map(one, reqs):
                sent.codes[code] += 1
                if out:
                    sent.arms[out["arm"]] += 1
                if out.get("anomaly") is not None:
                    cls, flag = out["pump_class"], bool(out["anomaly"])
                    sent.health[cls] += 1
                    sent.flagged[cls] += flag
                    sent.normal[cls] += normal
                    sent.false_flags[cls] += flag and normal
    return sent


def _health_rates(calm: Sent, later: Sent, trained: dict[str, Any]) -> dict[str, Any]:
    """Per served class with a health model: the share of windows it flagged before the
    drift and after (every class's later windows, the drifted class's shifted), and before
    the drift the share of normal-operation windows flagged (false alarms)."""
    return {
        cls: {
            "version": r.get("version"),
            "calm": calm.flagged[cls] / calm.health[cls] if calm.health[cls] else None,
            "calm_false": calm.false_flags[cls] / calm.normal[cls] if calm.normal[cls] else None,
            "later": later.flagged[cls] / later.health[cls] if later.health[cls] else None,
        }
        for cls, r in trained["classes"].items()
        if r.get("promoted") and calm.health[cls] + later.health[cls] > 0
    }


def _wait_for_log(settings: Settings, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = len(read_log(settings.predictions_uri))
        if n >= expected:
            return n
        time.sleep(0.5)
    raise DataError(f"prediction log holds {n} rows after {timeout:.0f} s, expected {expected}")


def _reload_health(url: str, api_key: str, admin_token: str, health: dict[str, Any]) -> None:
    """Have the replica reload its models (``POST /v1/admin/reload``), and check that it
    serves each promoted health model (``GET /v1/models``)."""
    with httpx.Client(base_url=url, timeout=60.0) as client:
        client.post(
            "/v1/admin/reload", headers={"authorization": f"Bearer {admin_token}"}
        ).raise_for_status()
        listed = client.get("/v1/models", headers={API_KEY_HEADER: api_key})
        listed.raise_for_status()
    serving = {c: m.get("anomaly") for c, m in listed.json()["classes"].items()}
    for cls, r in health["classes"].items():
        if r.get("promoted") and cls in serving and serving[cls] != str(r["version"]):
            raise DataError(f"{cls}: Serve has health model {serving[cls]}, not v{r['version']}")


def run_demo(settings: Settings, cfg: DemoConfig) -> dict[str, Any]:
    from edge_export.export import run_export
    from pumpfleet.search_space import AnomalySearchSpace
    from ray_jobs.train_anomaly import BesideSearch
    from serve_apps import run as serve_run

    t0 = time.monotonic()
    total = 9

    def step(i: int, name: str) -> None:
        cfg.steps.append((name, time.monotonic()))
        log.info("[%d/%d] %s", i, total, name)

    step(1, f"simulating {cfg.pumps} pumps over {cfg.days} days")
    sim = simulate(
        SimulationConfig(pumps=cfg.pumps, days=cfg.days, seed=cfg.seed),
        settings.data_uri,
        overwrite=True,
    )
    step(2, "ingesting (the vectorised ingest in this process, while Ray starts)")
    serve_run.use_serve_env(local=True)  # before Ray starts: the scoring step serves on it
    apply_engine_env(settings)  # before the ingest's thread reads it (init_ray does too)
    # A small fleet's ingest needs no cluster: its array functions, called here, take
    # about a second, while Ray's start (mostly waiting on its processes) takes several.
    # The retrain ingests on Ray Data, as a job submitted to a cluster would.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-ingest") as pool:
        ingesting = pool.submit(
            ingest_and_log,
            settings,
            settings.data_uri,
            settings.features_uri,
            WindowConfig(),
            single_process=True,
        )
        init_ray(settings)
        ingest = ingesting.result()
    step(3, "training one RUL model per class, and beside it a health model per class, on Ray Tune")
    snapshot = ingest["snapshot_id"]
    # The health search runs in a process of its own beside the RUL search and the
    # evaluation, and their trials share the CPUs: alone, each search left about one of
    # two cores idle (trial start-up, checkpoints, registration).
    space = AnomalySearchSpace(lr=[1e-2], epochs=cfg.health_epochs, seed=cfg.seed)
    health_search = BesideSearch(settings, snapshot, space, promote=True)
    # A network and boosted trees per class, the better on the validation pumps kept.
    rul_space = SearchSpace(kind=["cnn", "gbm"], lr=[1e-2], epochs=cfg.epochs, seed=cfg.seed)
    train = run_train(settings, snapshot, rul_space)
    step(4, "evaluating challengers against champions")
    evaluation = run_evaluate(settings, snapshot)
    # The demo makes its own keys (kept in memory; only their digests reach Serve).
    api_key, admin_token = new_key(), new_key()
    secrets = Secrets(api_keys=(digest(api_key),), admin_tokens=(digest(admin_token),))
    served = [c for c, r in evaluation["classes"].items() if r["champion"]]
    # Serve starts as soon as the champions are known, while the health search finishes
    # and the export runs (its processes start one after another, and the health search's
    # one trial at a time leaves a core to spare), and the requests are made beside it.
    # Production only: the demo never uses the /staging app that `pumpfleet serve` adds.
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-serve")
    starting = pool.submit(
        serve_run.start,
        settings,
        cfg.port or free_port(),
        cfg.challenger_weight,
        secrets=secrets,
        staging=False,
    )
    made = pool.submit(_story_requests, settings, cfg, served)
    try:
        step(5, "health (anomaly) models per class: gated and promoted")
        health = health_search.result()
        step(6, "exporting ONNX edge bundles")
        export = run_export(settings)
        step(7, "serving on Ray Serve and scoring over HTTP")
        url = starting.result()
        # The health models were promoted while Serve started: the replica picks them
        # up as it would a promotion (the admin route), before the first request.
        _reload_health(url, api_key, admin_token, health)
        drifted, calm, later = made.result()
        before = len(read_log(settings.predictions_uri))  # an earlier demo's rows
        first = _send(url, calm + BAD_REQUESTS, api_key)
        n = _wait_for_log(settings, before + sum(first.arms.values()))
        second = _send(url, later, api_key)
        arms, codes = first.arms + second.arms, first.codes + second.codes
        if not arms:
            raise DataError(f"no scoring request succeeded (HTTP status counts {dict(codes)})")
        logged = _wait_for_log(settings, n + sum(second.arms.values())) - before
        scored = {r["pump_id"] for r in calm + later}
        work = work_list_after_scoring(settings, len(scored))
    except BaseException:
        pool.shutdown(wait=True)  # Serve's start finished (or failed) before it stops
        serve_run.stop()
        raise
    pool.shutdown(wait=True)
    step(8, "shutting Serve down, and beside it monitoring drift and performance with NannyML")
    # Serve goes down while the monitor reads the log (every row is in it) and starts its
    # class tasks: the replica's half CPU, once freed, lets the second task start (one CPU
    # each: with the replica up, they ran one at a time on two CPUs).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-serve-stop") as stopper:
        stopping = stopper.submit(serve_run.stop)
        jobs = InProcessJobs()
        monitor = run_monitor(settings, ingest["snapshot_id"], server=jobs)
        stopping.result()
    loop = None
    if jobs.submitted:
        classes, reason = jobs.submitted[0]
        step(9, f"retraining {classes[0]} on new data, A/B on post-drift data, gates")
        loop = closed_loop(settings, cfg, classes[0], reason, DRIFT_CHANNEL, DRIFT_FACTOR)
    return {
        "simulation": sim,
        "ingest": ingest,
        "train": train,
        "evaluate": evaluation,
        "health": health,
        "health_rates": _health_rates(first, second, health),
        "export": export,
        "serve": {
            "url": url,
            "arms": dict(arms),
            "status": dict(codes),
            "logged": logged,
            "pumps": len(scored),
        },
        "work_list": work,
        "board_url": f"{url}/board",
        "monitor": monitor,
        "retrains_submitted": jobs.submitted,
        "closed_loop": loop,
        "drift_class": drifted,
        "demo_days": cfg.days,
        "seconds": round(time.monotonic() - t0, 1),
        # seconds from each step's start to the next's (the last: to the end)
        "step_seconds": [
            round(b - a, 1)
            for (_, a), (_, b) in zip(
                cfg.steps, [*cfg.steps[1:], ("end", time.monotonic())], strict=True
            )
        ],
    }


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
