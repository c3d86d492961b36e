"""Staging before production: ``pumpfleet deploy --stage staging|production``.

``staging`` points the class's ``staging`` alias at the version, has the staging app
(``/staging``, see ``serve_apps/run.py``) load it, and runs a smoke and performance suite
against it over HTTP: readiness, the same scores as the model offline on holdout windows,
4xx on bad input, and the latency of single-window requests against a budget.
``production`` then makes the version the production app's challenger, and only if it
passed staging. Both record the outcome on the model version (tags ``deploy.*`` and the
audit trail that ``pumpfleet history`` prints).

Promotion to champion stays with the gates (``pumpfleet evaluate`` / ``promote``).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pumpfleet.errors import InputError, PumpfleetError, RegistryError
from pumpfleet.lifecycle import AuditRecord, check_class, current_user, utc_now, write_record
from pumpfleet.registry import CHALLENGER, CHAMPION, STAGING, LoadedModel, Registry
from pumpfleet.scoring import score_rul
from pumpfleet.settings import Settings
from pumpfleet.snapshot import open_snapshot
from serve_apps.run import STAGING_PREFIX
from serve_apps.security import API_KEY_HEADER, credentials

Stage = Literal["staging", "production"]
TAG = "deploy.{stage}.{key}"
PASSED = "passed"


class DeployError(PumpfleetError):
    """The staging suite failed, or production was asked for a version that did not pass."""


@dataclass(frozen=True)
class Suite:
    """What the staging suite asks of a version."""

    windows: int = 64  # holdout windows scored over HTTP and offline
    atol: float = 1e-5  # HTTP vs offline onnxruntime, per output
    latency_requests: int = 200  # single-window requests, 4 at a time
    p99_budget_ms: float = 100.0
    reload_wait_s: float = 30.0


@dataclass(frozen=True)
class Credentials:
    api_key: str
    admin_token: str

    @classmethod
    def load(
        cls, env: dict[str, str] | None = None, settings: Settings | None = None
    ) -> Credentials:
        """The first scoring key and the admin token, from the same settings (or secret
        files) the service reads; ``env``: a mapping of those variables (tests)."""
        keys, tokens = credentials(env, settings)
        if not keys or not tokens:
            raise InputError(
                "deploy needs PUMPFLEET_API_KEYS and PUMPFLEET_ADMIN_TOKEN (or their _FILE)"
            )
        return cls(keys[0], tokens[0])


def _client(url: str, creds: Credentials, timeout: float = 30.0) -> Any:
    import httpx

    return httpx.Client(
        base_url=url.rstrip("/"), timeout=timeout, headers={API_KEY_HEADER: creds.api_key}
    )


def request_body(pump_id: str, cls: str, window: np.ndarray, inputs: list[str]) -> dict[str, Any]:
    """A ``/v1/score`` body for one raw window [W, C + S]."""
    return {
        "pump_id": pump_id,
        "pump_class": cls,
        "readings": {
            c: [None if np.isnan(v) else float(v) for v in window[:, j]]
            for j, c in enumerate(inputs)
        },
    }


def _wait_for_version(
    client: Any, prefix: str, cls: str, arm: str, version: str, creds: Credentials, wait_s: float
) -> None:
    """Ask the app to reload, then wait until it serves ``version`` on ``arm``."""
    deadline = time.monotonic() + wait_s
    auth = {"authorization": f"Bearer {creds.admin_token}"}
    r = client.post(f"{prefix}/v1/admin/reload", headers=auth)
    if r.status_code != 200:
        raise DeployError(f"{prefix or '/'}: reload answered {r.status_code}: {r.text[:200]}")
    while True:
        served = client.get(f"{prefix}/v1/models").json().get("classes", {}).get(cls, {})
        if served.get(arm) == version:
            return
        if time.monotonic() > deadline:
            raise DeployError(
                f"{prefix or '/'}: {cls} v{version} not served as {arm} after {wait_s:.0f} s "
                f"(serving {served or 'nothing'})"
            )
        time.sleep(0.5)


def run_suite(
    client: Any, model: LoadedModel, cls: str, raw: np.ndarray, ids: np.ndarray, suite: Suite
) -> dict[str, Any]:
    """The smoke and performance checks against the staging app; returns the figures and
    the reasons it failed (none if it passed)."""
    reasons: list[str] = []
    p = STAGING_PREFIX
    ready = client.get(f"{p}/readyz")
    if ready.status_code != 200:
        reasons.append(f"readyz answered {ready.status_code}")
    n = min(suite.windows, len(raw))
    inputs = model.spec.inputs
    items = [request_body(str(ids[i]), cls, raw[i], inputs) for i in range(n)]
    r = client.post(f"{p}/v1/score/batch", json={"items": items})
    parity = float("nan")
    if r.status_code != 200:
        reasons.append(f"batch of {n} holdout windows answered {r.status_code}: {r.text[:200]}")
    else:
        out = r.json()
        results = out["results"]
        if out["errors"] or any(x is None for x in results):
            reasons.append(f"{len(out['errors'])} of {n} holdout windows were refused")
        else:
            offline = score_rul(raw[:n], model.spec, model.runner())
            rul, prob = offline.rul_hours, offline.failure_probability
            got_rul = np.array([x["rul_hours"] for x in results])
            got_prob = np.array([x["failure_probability"] for x in results])
            parity = float(max(np.abs(got_rul - rul).max(), np.abs(got_prob - prob).max()))
            if not parity <= suite.atol * max(1.0, float(np.abs(rul).max())):
                reasons.append(f"HTTP scores differ from the model offline by {parity:.2e}")
            versions = {x["model_version"] for x in results}
            if versions != {model.version}:
                reasons.append(f"scored by versions {sorted(versions)}, not v{model.version}")
    bad = dict(items[0])
    bad["readings"] = {k: v[:-1] for k, v in items[0]["readings"].items()}
    for what, body in (("a short window", bad), ("an unknown field", {**items[0], "extra": 1})):
        code = client.post(f"{p}/v1/score", json=body).status_code
        if code != 422:
            reasons.append(f"{what} answered {code}, not 422")
    latencies = _latencies(client, items, suite.latency_requests)
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
    if p99 > suite.p99_budget_ms:
        reasons.append(f"p99 latency {p99:.1f} ms over the budget of {suite.p99_budget_ms} ms")
    return {
        "windows": n,
        "parity_max_abs": parity,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "requests": len(latencies),
        "reasons": reasons,
    }


def _latencies(client: Any, items: list[dict[str, Any]], n: int) -> list[float]:
    def one(i: int) -> float:
        t = time.perf_counter()
        r = client.post(f"{STAGING_PREFIX}/v1/score", json=items[i % len(items)])
        ms = (time.perf_counter() - t) * 1000.0
        return ms if r.status_code == 200 else float("inf")

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(n)))


def _record(
    registry: Registry, name: str, cls: str, version: str, stage: Stage, outcome: dict[str, Any]
) -> None:
    tags = {TAG.format(stage=stage, key=k): v for k, v in outcome.items() if k != "reasons"}
    tags[TAG.format(stage=stage, key="reasons")] = json.dumps(outcome.get("reasons", []))
    registry.set_version_tags(name, version, tags)
    why = outcome["status"] + (": " + "; ".join(outcome["reasons"]) if outcome["reasons"] else "")
    write_record(
        registry,
        AuditRecord(
            action=f"deploy-{stage}",  # type: ignore[arg-type]
            pump_class=cls,
            version=version,
            previous=outcome.get("previous"),
            who=outcome["by"],
            when=utc_now(),
            why=why,
            source="deploy",
        ),
    )


def deploy(
    settings: Settings,
    url: str,
    cls: str,
    version: str,
    stage: Stage,
    creds: Credentials | None = None,
    suite: Suite | None = None,
) -> dict[str, Any]:
    """Stage ``version`` of ``cls`` (see the module's docstring); returns the outcome,
    raises DeployError (after recording it) if the version did not pass."""
    creds = creds or Credentials.load(settings=settings)
    suite = suite or Suite()
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    name = check_class(registry, cls)
    tags = registry.version_tags(name, version)
    aliases = registry.aliases(name)
    started = time.perf_counter()
    outcome: dict[str, Any] = {"by": current_user(), "at": utc_now().isoformat()}
    with _client(url, creds) as client:
        if stage == "staging":
            model = registry.load_version(name, version)
            snapshot = model.tags.get("feature_snapshot", "latest")
            raw, cols = open_snapshot(settings.features_uri, snapshot).load(
                cls, "holdout", model.spec
            )
            if len(raw) == 0:
                raise DeployError(f"{cls}: snapshot {snapshot} has no holdout windows to test")
            outcome["previous"] = aliases.get(STAGING)
            registry.set_alias(name, STAGING, version)
            _wait_for_version(
                client, STAGING_PREFIX, cls, "champion", version, creds, suite.reload_wait_s
            )
            outcome |= run_suite(client, model, cls, raw, cols["pump_id"], suite)
        else:
            passed = tags.get(TAG.format(stage="staging", key="status"))
            if passed != PASSED:
                raise DeployError(
                    f"{cls} v{version} has not passed staging ({passed or 'never staged'}); "
                    f"run `pumpfleet deploy --stage staging --class {cls} --version {version}`"
                )
            if aliases.get(CHAMPION) == version:
                raise RegistryError(f"{cls}: v{version} is the champion already")
            outcome["previous"] = aliases.get(CHALLENGER)
            registry.set_alias(name, CHALLENGER, version)
            _wait_for_version(client, "", cls, "challenger", version, creds, suite.reload_wait_s)
            outcome["reasons"] = []
    outcome["status"] = "failed" if outcome["reasons"] else PASSED
    outcome["seconds"] = round(time.perf_counter() - started, 1)
    _record(registry, name, cls, version, stage, outcome)
    result = {"pump_class": cls, "version": version, "stage": stage, **outcome}
    if outcome["reasons"]:
        raise DeployError(f"{cls} v{version} failed {stage}: " + "; ".join(outcome["reasons"]))
    return result
