"""Object storage against a real S3 API server (moto's server mode, started here on
127.0.0.1 and stopped by its PID), configured as on AWS by the environment alone: files
whole or not at all, content digests from the store's ETags, write-once, an ingest from
an s3:// fleet into an s3:// snapshot published by its manifest (a run that died is never
read), the prediction log, edge uploads and MLflow's artifacts on S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pumpfleet import snapshot as snapshots
from pumpfleet import storage
from pumpfleet.ingestion import plan_ingest
from pumpfleet.settings import Settings, get_settings
from pumpfleet.simulator import SimulationConfig, simulate
from pumpfleet.snapshot import LATEST, MANIFEST, open_snapshot
from pumpfleet.windows import SPLITS, WindowConfig
from tests.s3_server import S3Server, s3_server, use_s3
from tests.unit import ingest_local

BUCKET = "pumpfleet-test"


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as s:
        s.create_bucket(BUCKET)
        yield s


@pytest.fixture
def s3(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A prefix of this test's own in the bucket, with the environment of an AWS user."""
    use_s3(monkeypatch, server)
    yield f"s3://{BUCKET}/{request.node.name}"
    get_settings.cache_clear()


def test_settings_configure_s3_as_aws_tools_are(server: S3Server, s3: str) -> None:
    s = get_settings()
    assert (s.aws_endpoint_url, s.aws_default_region) == (server.endpoint, "us-east-1")
    assert s.aws_access_key_id == "pumpfleet-test" and "secret" not in repr(s)
    storage.write_json(storage.join(s3, "a", "b.json"), {"x": 1})
    assert storage.read_json(storage.join(s3, "a", "b.json")) == {"x": 1}
    assert storage.exists(storage.join(s3, "a")) and not storage.exists(storage.join(s3, "z"))
    assert storage.list_files(s3) == [
        f"{BUCKET}/test_settings_configure_s3_as_aws_tools_are/a/b.json"
    ]
    assert storage.folders(s3) == ["a"]
    storage.delete(storage.join(s3, "a"))
    assert storage.list_files(s3) == []


def test_digests_follow_content_not_size(s3: str, tmp_path: Path) -> None:
    for root in (s3, str(tmp_path)):
        storage.write_bytes(storage.join(root, "f", "x.bin"), b"aaaa")
        storage.write_bytes(storage.join(root, "f", "y.bin"), b"aaaa")
        before = storage.digests(storage.join(root, "f"))
        assert set(before) == {"x.bin", "y.bin"} and before["x.bin"] == before["y.bin"]
        storage.write_bytes(storage.join(root, "f", "x.bin"), b"aaab")  # the same size
        after = storage.digests(storage.join(root, "f"))
        assert after["x.bin"] != before["x.bin"] and after["y.bin"] == before["y.bin"]
    assert before["y.bin"].startswith("sha256:")  # local: the bytes' hash
    assert storage.digests(storage.join(s3, "f"))["y.bin"].startswith("etag:")  # S3: the store's


def test_write_once_lets_one_writer_win(s3: str, tmp_path: Path) -> None:
    for root in (s3, str(tmp_path)):
        uri = storage.join(root, "once", "k.bin")
        assert storage.write_once(uri, b"first") is True
        assert storage.write_once(uri, b"second") is False
        assert storage.read_bytes(uri) == b"first"


def _snapshot_files(snap: snapshots.Snapshot) -> int:
    return sum(len(snap.files(f"windows/pump_class={c}")) for c in snap.classes)


def test_an_ingest_from_s3_to_s3_is_published_by_its_manifest(
    s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, features = storage.join(s3, "fleet"), storage.join(s3, "features")
    # Ten days: every pump has windows a week or more before the end of its record.
    sim = simulate(SimulationConfig(pumps=9, days=10, seed=3), fleet)
    cfg = WindowConfig(stride=8)
    plan = plan_ingest(fleet, features, cfg)
    assert plan.rows_in == sim["readings"] and plan.source == fleet
    assert all(d.startswith("etag:") for d in plan.inputs.values())
    assert {k.split("/", 1)[0] for k in plan.inputs} == {"readings", "events"}

    # A run that dies after writing its data and before its manifest: nothing to read.
    dead, parts = ingest_local.write_run(plan)
    assert storage.list_files(dead) and not storage.exists(storage.join(plan.final, MANIFEST))
    with pytest.raises(Exception, match="no feature snapshot"):
        open_snapshot(features, plan.snapshot_id)
    again = plan_ingest(fleet, features, cfg)
    assert again.up_to_date is None and again.snapshot_id == plan.snapshot_id

    # The next run publishes under a prefix of its own; the dead run's files stay out.
    run, parts = ingest_local.write_run(again)
    monkeypatch.setattr(snapshots, "STALE_AFTER_S", 3600.0)
    summary = ingest_local.publish(again, run, parts)
    snap = open_snapshot(features)  # LATEST names it
    assert snap.id == plan.snapshot_id and snap.data == run
    assert snap.manifest["files"] == sorted(storage.relative(run, storage.list_files(run)))
    assert storage.folders(plan.final) == sorted([dead.rsplit("/", 1)[1], run.rsplit("/", 1)[1]])
    loaded = {cls: snap.load(cls, "train") for cls in snap.classes}
    assert {c: len(raw) for c, (raw, _) in loaded.items()} == {
        c: w["train"] for c, w in summary["windows"].items()
    }
    raw, cols = max(loaded.values(), key=lambda x: len(x[0]))
    assert len(raw) > 0 and raw.shape[1] == cfg.window and np.isfinite(cols["rul_hours"]).all()
    assert set(summary["windows"][snap.classes[0]]) == set(SPLITS)
    assert summary["source"] == fleet and snap.manifest["config"]["stride"] == 8
    assert storage.read_bytes(storage.join(features, LATEST)).decode() == plan.snapshot_id

    # Ingesting the same objects again: nothing to do. A dead run's prefix that has been
    # idle long enough goes with the next publication.
    assert plan_ingest(fleet, features, cfg).up_to_date["up_to_date"] is True
    monkeypatch.setattr(snapshots, "STALE_AFTER_S", 0.0)
    snapshots.publish(run, {k: v for k, v in snap.manifest.items() if k not in ("data", "files")})
    assert storage.folders(plan.final) == [run.rsplit("/", 1)[1]]
    assert _snapshot_files(open_snapshot(features)) == _snapshot_files(snap)


def test_the_prediction_log_reports_and_edge_uploads_live_on_s3(s3: str) -> None:
    from pumpfleet.edge_ingest import store_upload
    from pumpfleet.errors import ConflictError
    from pumpfleet.predlog import PredictionLog, read_log
    from pumpfleet.records import PredictionRecord

    settings = Settings(storage_uri=s3)
    assert settings.predictions_uri == f"{s3}/predictions"
    assert settings.reports_uri == f"{s3}/reports" and settings.bundles_uri == f"{s3}/bundles"
    assert settings.artifact_root == f"{s3}/mlartifacts"
    log = PredictionLog(settings.predictions_uri, to_table=pa.Table.from_pylist)
    log.extend([{"pump_id": f"p{i}", "pump_class": "esp", "rul_hours": float(i)} for i in range(5)])
    assert log.flush() == 5
    assert read_log(settings.predictions_uri)["rul_hours"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]

    ts = pd.Timestamp("2026-06-01", tz="UTC").value
    rec = PredictionRecord(
        timestamp=ts, pump_id="p1", pump_class="esp", model_version="3",
        rul_hours=10.0, failure_probability=0.1, request_id="r1",
    )  # fmt: skip
    root = settings.predictions_uri
    assert store_upload(root, "rig-7", "b1", [rec]) == {"stored": 1, "duplicate": False}
    assert store_upload(root, "rig-7", "b1", [rec]) == {"stored": 0, "duplicate": True}
    with pytest.raises(ConflictError):
        store_upload(root, "rig-7", "b1", [rec.model_copy(update={"rul_hours": 11.0})])
    edge = read_log(root)
    assert len(edge) == 6 and edge["device_id"].dropna().tolist() == ["rig-7"]


def test_mlflow_artifacts_go_to_s3(s3: str, tmp_path: Path) -> None:
    from pumpfleet.registry import Registry

    settings = Settings(home=tmp_path, storage_uri=s3)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    run_id = registry.start_run("pumpfleet-s3-test", "artifacts")
    registry.log_dict(run_id, {"a": 1}, "summary.json")
    registry.end_run(run_id)
    keys = storage.list_files(storage.join(s3, "mlartifacts"))
    assert [k.rsplit("/", 1)[1] for k in keys] == ["summary.json"]
    assert keys[0].startswith(f"{BUCKET}/test_mlflow_artifacts_go_to_s3/mlartifacts/")
