"""The whole loop on a multi-node Ray cluster with the data on S3, as an operator runs it:

- an S3 API server (moto_server) on 127.0.0.1, configured as AWS tools are, where the
  fleet, the snapshots, MLflow's artifacts, the prediction log, the reports and the
  bundles live (``PUMPFLEET_STORAGE_URI``); only the SQLite MLflow db, Tune and the
  signing key stay in the workspace folder the nodes share;
- a Ray head (``ray start --head``, token authentication, loopback) and a worker node
  (``ray start --address``), separate processes with their own resources, temp dirs and
  ports, each stopped by its own process group, never ``ray stop``;
- every step submitted through the Ray Job Submission API, with the submitter's git
  commit in its runtime env: ingest (``pumpfleet ingest --source s3://... --out
  s3://...`` with 50-step windows), train, evaluate, export, monitor; the monitor finds
  drift in the logged predictions and submits the retrain itself, which must read the
  champion's fleet and its 50-step settings, not the workspace's default data.

Small on purpose (16 pumps, one class trained, one epoch): what is tested is the path
through the cluster and the store, not the models.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from pumpfleet import storage
from pumpfleet.settings import Settings
from pumpfleet.simulator import SimulationConfig, simulate
from tests.conftest import free_port
from tests.integration.test_remote import BIN, RAY_NODE_GRACE, ROOT, last_json, stop, wait_for
from tests.s3_server import S3Server, s3_server, use_s3

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BUCKET = "pumpfleet"
STORE = f"s3://{BUCKET}"
FLEET_URI = f"{STORE}/fleet"  # not the default data location (STORE/data)
FLEET = SimulationConfig(pumps=16, days=24, seed=11)
WINDOW = 50
CLS = "esp"
PER_PHASE = 150  # logged predictions before the drift, and as many after


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "0" * 40


def _node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1",
             "--disable-usage-stats", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _ports(*names: str) -> list[str]:
    return [f"--{name}={free_port()}" for name in names]


NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def cluster(
    s3: S3Server, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A head and a worker node, each a `ray start` of its own, with the settings a pod
    has (the workspace folder they share, the storage URI, the AWS variables)."""
    home = tmp_path_factory.mktemp("cluster-home")
    token = secrets.token_hex(32)
    gcs, dash = free_port(), free_port()
    url = f"http://127.0.0.1:{dash}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "AWS_"))}
    env = base | s3.env() | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "NML_DISABLE_USAGE_LOGGING": "1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PUMPFLEET_HOME": str(home),
        "PUMPFLEET_STORAGE_URI": STORE,
        "PUMPFLEET_JOBS_ADDRESS": url,  # where the monitor submits retraining
    }  # fmt: skip
    # Ray's socket paths must fit in 107 bytes: short temp dirs, one per node.
    temps = [Path(tempfile.mkdtemp(prefix=f"pfc{n}", dir="/tmp")) for n in ("h", "w")]
    head = _node(
        ["--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host", "127.0.0.1",
         "--include-dashboard", "true", f"--temp-dir={temps[0]}", "--num-cpus", "1",
         "--resources", '{"head": 1}',
         *_ports("ray-client-server-port", *NODE_PORTS)],
        env, temps[0] / "start.log",
    )  # fmt: skip
    worker = None
    auth = {"Authorization": f"Bearer {token}"}
    try:
        up = lambda: httpx.get(f"{url}/api/version", headers=auth).is_success  # noqa: E731
        wait_for(up, head, temps[0] / "start.log", 150)
        worker = _node(
            [f"--address=127.0.0.1:{gcs}", f"--temp-dir={temps[1]}", "--num-cpus", "1",
             "--resources", '{"worker": 1}', *_ports(*NODE_PORTS)],
            env, temps[1] / "start.log",
        )  # fmt: skip
        two = lambda: len(_alive_nodes(url, auth)) == 2  # noqa: E731
        wait_for(two, worker, temps[1] / "start.log", 150)
        # The test reads what the jobs wrote, as the operator's laptop would: same store.
        use_s3(monkeypatch, s3)
        yield {"url": url, "auth": auth, "home": home, "token": token, "env": env}
    finally:
        if worker is not None:
            stop(worker, str(temps[1]), grace=RAY_NODE_GRACE)
        stop(head, str(temps[0]), token, grace=RAY_NODE_GRACE)
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def _alive_nodes(url: str, auth: dict[str, str]) -> list[dict[str, Any]]:
    got = httpx.get(f"{url}/api/v0/nodes", params={"detail": "1"}, headers=auth, timeout=10)
    if not got.is_success:
        return []
    return [n for n in got.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]


def _task_nodes(url: str, auth: dict[str, str]) -> set[str]:
    """The nodes that ran the finished Ray tasks (Ray Data's, Tune's trials, ...)."""
    got = httpx.get(
        f"{url}/api/v0/tasks", params={"detail": "1", "limit": "10000"}, headers=auth, timeout=60
    )
    assert got.is_success, got.text[:2000]
    rows = got.json()["data"]["result"]["result"]
    return {r["node_id"] for r in rows if r.get("node_id") and r["state"] == "FINISHED"}


class Jobs:
    """The Ray Job Submission API of the cluster, as an operator's script uses it."""

    def __init__(self, cluster: dict[str, Any], commit: str) -> None:
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(cluster["url"], headers=cluster["auth"])
        dev = yaml.safe_load((ROOT / "cluster/runtime-env/dev.yaml").read_text())
        # The checkout as the working dir (no .git travels): the commit goes with it.
        env_vars = {**dev.get("env_vars", {}), "PUMPFLEET_GIT_COMMIT": commit}
        self.runtime_env = {**dev, "working_dir": str(ROOT), "env_vars": env_vars}
        self.seconds: dict[str, float] = {}

    def run(self, name: str, entrypoint: str, timeout: float = 420) -> dict[str, Any]:
        job_id = self.client.submit_job(
            entrypoint=entrypoint,
            submission_id=f"{name}-{secrets.token_hex(4)}",
            runtime_env=self.runtime_env,
        )
        return self.wait(job_id, timeout)

    def wait(self, job_id: str, timeout: float = 420) -> dict[str, Any]:
        started = time.monotonic()
        deadline = started + timeout
        while (status := str(self.client.get_job_status(job_id))) in ("PENDING", "RUNNING"):
            assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout} s"
            time.sleep(0.25)
        self.seconds[job_id.rsplit("-", 1)[0]] = round(time.monotonic() - started, 1)
        logs = self.client.get_job_logs(job_id)
        assert status == "SUCCEEDED", f"{job_id}: {status}\n{logs[-4000:]}"
        return last_json(logs)


def _log_drifting_predictions(settings: Settings) -> None:
    """What the scoring service logs for the champion, to the prediction log on S3: the
    second half of the windows read 30 % hot (a motor-temperature drift)."""
    from pumpfleet import runtime
    from pumpfleet.features import decode_outputs, window_features, window_summary
    from pumpfleet.predlog import PredictionLog
    from pumpfleet.registry import CHAMPION, Registry, model_name
    from pumpfleet.snapshot import open_snapshot

    model = Registry(settings.tracking_uri, settings.artifact_root).load(model_name(CLS), CHAMPION)
    snap = open_snapshot(settings.features_uri, model.tags["feature_snapshot"])
    parts = [snap.load(CLS, split, model.spec) for split in ("train", "val", "holdout")]
    raw = np.concatenate([p[0] for p in parts])
    pumps = np.concatenate([p[1]["pump_id"] for p in parts])
    pick = np.random.default_rng(0).choice(len(raw), 2 * PER_PHASE, replace=len(raw) < 300)
    raw, pumps = raw[pick].copy(), pumps[pick]
    raw[PER_PHASE:, :, model.spec.channels.index("motor_temp")] *= 1.3
    x = window_features(raw, model.spec)
    rul, prob = decode_outputs(runtime.run(runtime.session(model.onnx), x), model.spec)
    summary = window_summary(raw, model.spec)
    t0 = pd.Timestamp("2026-06-01", tz="UTC")
    rows = [
        {
            "timestamp": t0 + pd.Timedelta(minutes=j),
            "pump_id": str(pumps[j]),
            "pump_class": CLS,
            "arm": "champion",
            "model_version": model.version,
            "rul_hours": float(rul[j]),
            "failure_probability": float(prob[j]),
            **{f"in_{k}": float(v[j]) for k, v in summary.items()},
        }
        for j in range(len(raw))
    ]
    log = PredictionLog(settings.predictions_uri)
    log.extend(rows)
    log.flush()


def test_the_whole_loop_on_a_multi_node_cluster_with_the_data_on_s3(
    cluster: dict[str, Any],
) -> None:
    from pumpfleet import bundle
    from pumpfleet.evaluation_run import promote_version
    from pumpfleet.registry import CHAMPION, Registry, model_name
    from pumpfleet.snapshot import open_snapshot

    nodes = _alive_nodes(cluster["url"], cluster["auth"])
    resources = sorted(
        (n["resources_total"]["CPU"], sorted(set(n["resources_total"]) & {"head", "worker"}))
        for n in nodes
    )
    assert resources == [(1.0, ["head"]), (1.0, ["worker"])]
    commit = _commit()
    jobs = Jobs(cluster, commit)
    settings = Settings(home=cluster["home"], storage_uri=STORE)
    assert settings.data_uri == f"{STORE}/data" != FLEET_URI
    simulate(FLEET, FLEET_URI)  # the operator's fleet, uploaded to the bucket

    ingest = jobs.run(
        "ingest",
        f"pumpfleet ingest --source {FLEET_URI} --out {STORE}/features --window {WINDOW}",
    )
    readings = FLEET.pumps * FLEET.days * 24 * 60 // FLEET.interval_minutes
    assert ingest["status"] == "success" and ingest["rows_in"] == ingest["rows_valid"] == readings
    snap = open_snapshot(settings.features_uri)  # published on S3 by its manifest
    assert snap.id == ingest["snapshot_id"] and snap.root == f"{STORE}/features/{snap.id}"
    assert snap.manifest["config"]["window"] == WINDOW
    assert snap.manifest["summary"]["source"] == FLEET_URI
    assert all(d.startswith("etag:") for d in snap.manifest["inputs"].values())
    assert not (cluster["home"] / "features").exists()  # nothing on the nodes' disk

    train = jobs.run("train", f"python -m ray_jobs.train --epochs 1 --classes {CLS}")
    assert train["snapshot_id"] == snap.id and list(train["classes"]) == [CLS]
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    version = train["classes"][CLS]["version"]
    run = registry.client.get_run(train["classes"][CLS]["run_id"])
    assert run.data.tags["git.commit"] == commit  # from the job's runtime env
    assert run.data.tags["feature_snapshot"] == snap.id
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [snap.id]
    assert run.info.artifact_uri.startswith(f"{STORE}/mlartifacts/")
    assert storage.list_files(run.info.artifact_uri)  # the model, on S3
    # The work was spread: both nodes ran tasks (one CPU each; two trials at once).
    assert _task_nodes(cluster["url"], cluster["auth"]) >= {n["node_id"] for n in nodes}

    evaluate = jobs.run("evaluate", "python -m ray_jobs.evaluate")
    if not evaluate["classes"][CLS]["promoted"]:  # one epoch may not beat the baseline
        promote_version(settings, CLS, version, force=True, reason="cluster loop test")
    assert registry.version_by_alias(model_name(CLS), CHAMPION) == version

    export = jobs.run("export", f"python -m edge_export.export --class {CLS}")
    made = export["bundles"][CLS]
    assert made["bundle"].startswith(f"{STORE}/bundles/{CLS}/")
    local = cluster["home"] / "downloaded.pfb"
    local.write_bytes(storage.read_bytes(made["bundle"]))
    assert len(local.read_bytes()) == made["bytes"]
    assert bundle.read_bundle(local, export["public_key"]).manifest.feature_snapshot == snap.id

    _log_drifting_predictions(settings)
    monitor = jobs.run("monitor", "python -m ray_jobs.monitor --chunk-size 50")
    assert monitor["alerting_classes"] == [CLS] and monitor["snapshot_id"] == snap.id
    drift = monitor["classes"][CLS]
    assert drift["drifted"] and drift["reference_snapshot"] == snap.id
    assert "motor_temp" in drift["drifted_features"]
    assert monitor["report"].startswith(f"{STORE}/reports/") and storage.exists(monitor["report"])
    (trigger,) = monitor["triggers"]
    assert trigger["pump_class"] == CLS and trigger["start"] is True
    why = ", ".join(drift["drifted_features"]) or "multivariate"
    assert trigger["reason"] == f"drift on {CLS}: {why}"
    assert trigger["job_id"].startswith("pumpfleet-retrain-")

    # The retrain the monitor submitted itself: the champion's fleet and window settings.
    retrain = jobs.wait(trigger["job_id"], timeout=480)
    assert retrain["source"] == FLEET_URI  # not the default s3://pumpfleet/data
    assert retrain["ingest_config"]["window"] == WINDOW  # not the default 24
    assert retrain["ingest_config"] == snap.manifest["config"]
    assert retrain["settings_of_snapshot"] == snap.id
    assert retrain["snapshot_id"] == snap.id and retrain["new_snapshot"] is False
    new = retrain["classes"][CLS]
    assert new["champion"] == version and int(new["challenger"]) > int(version)
    retrained = registry.client.get_model_version(model_name(CLS), new["challenger"])
    assert registry.client.get_run(retrained.run_id).data.tags["git.commit"] == commit
    # Every job ran on the cluster's job server, and they are all there.
    submitted = {j.submission_id.split("-")[0] for j in jobs.client.list_jobs()}
    assert {"ingest", "train", "evaluate", "export", "monitor", "pumpfleet"} <= submitted
    print(json.dumps({"seconds": jobs.seconds, "retrained": new, "drift": why}))
