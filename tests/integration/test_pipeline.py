"""Ingest (Ray Data), train (Ray Tune + MLflow), evaluate and export, on local Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pumpfleet import bundle
from pumpfleet.errors import BundleError, InputError
from pumpfleet.registry import CHAMPION, Registry, model_name
from pumpfleet.schema import PUMP_CLASSES
from pumpfleet.snapshot import open_snapshot
from tests.integration.conftest import INJECTED

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ingest_counts_reconcile_and_quarantine_says_why(workspace: dict[str, Any]) -> None:
    ing = workspace["ingest"]
    n_bad = sum(INJECTED.values())
    assert ing["rows_in"] == workspace["simulated_rows"] + n_bad
    assert ing["rows_quarantined"] == n_bad
    assert ing["rows_valid"] + ing["rows_quarantined"] == ing["rows_in"]
    assert ing["quarantine_reasons"] == {k: v for k, v in INJECTED.items() if v}
    snap = open_snapshot(workspace["settings"].features_uri, ing["snapshot_id"])
    quarantine = pd.read_parquet(f"{snap.data}/quarantine")  # the run its manifest names
    assert len(quarantine) == n_bad
    assert quarantine["quarantine_reason"].notna().all()
    assert set(ing["windows"]) == set(PUMP_CLASSES)
    for cls, splits in ing["windows"].items():
        # Every split is counted (here rod has no future windows), and each class has
        # windows to train, tune and test on.
        assert set(splits) == {"train", "val", "holdout", "future"}, (cls, splits)
        assert all(splits[s] > 0 for s in ("train", "val", "holdout")), (cls, splits)


def test_ingest_summary_is_in_mlflow(workspace: dict[str, Any]) -> None:
    ing = workspace["ingest"]
    client = MlflowClient(tracking_uri=workspace["settings"].tracking_uri)
    run = client.get_run(ing["mlflow_run_id"])
    assert run.data.tags["feature_snapshot"] == ing["snapshot_id"]
    m = run.data.metrics
    assert (m["rows_in"], m["rows_valid"], m["rows_quarantined"]) == (
        ing["rows_in"],
        ing["rows_valid"],
        ing["rows_quarantined"],
    )
    assert m["quarantined.out_of_range.motor_temp"] == INJECTED["out_of_range:motor_temp"]
    assert m["windows.esp.train"] == ing["windows"]["esp"]["train"]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["ingest_summary.json"]


def test_each_class_normalises_per_operating_regime(workspace: dict[str, Any]) -> None:
    """The simulator runs each class at its own set of speeds (physics.CLASS_PARAMS): the
    regimes learned at ingest are those speeds, and within each the setpoint no longer
    moves the normalised channels."""
    from pumpfleet.features import window_features
    from pumpfleet.physics import CLASS_PARAMS

    snap = open_snapshot(str(workspace["settings"].features_dir))
    assert snap.manifest["channels"][-2:] == ["speed_setpoint", "load_setpoint"]
    for cls in PUMP_CLASSES:
        spec = snap.spec(cls)
        params = CLASS_PARAMS[cls]
        assert spec.regimes is not None, cls
        assert workspace["ingest"]["regimes"][cls]["k"] == len(params.regimes)
        speeds = [c[0] for c in spec.regimes.center]
        np.testing.assert_allclose(speeds, [r * params.speed for r in params.regimes], rtol=1e-3)
        raw, _ = snap.load(cls, "train")
        x = window_features(raw, spec)  # [N, W, C]
        regime = spec.regimes.assign(raw[..., spec.n_channels :])
        # Per regime, every channel's normalised training values centre on 0.
        for r in range(spec.regimes.k):
            means = x[regime == r].mean(axis=0)
            assert np.abs(means).max() < 0.5, (cls, r, means)


def test_ingest_again_does_nothing(workspace: dict[str, Any]) -> None:
    from ray_jobs.ingest import run_ingest

    s = workspace["settings"]
    again = run_ingest(str(s.data_dir), str(s.features_dir), workspace["window_config"])
    assert again["up_to_date"] is True
    assert again["snapshot_id"] == workspace["ingest"]["snapshot_id"]


def test_ingest_of_an_empty_folder_is_refused(tmp_path: Path, ray_session: Any) -> None:
    from pumpfleet.windows import WindowConfig
    from ray_jobs.ingest import run_ingest

    (tmp_path / "readings").mkdir()
    with pytest.raises(InputError, match="no Parquet files"):
        run_ingest(str(tmp_path), str(tmp_path / "features"), WindowConfig())


def test_every_trial_is_tracked_and_the_best_registered(workspace: dict[str, Any]) -> None:
    s = workspace["settings"]
    train = workspace["train"]
    assert train["trials"] == len(PUMP_CLASSES)
    client = MlflowClient(tracking_uri=s.tracking_uri)
    exp = client.get_experiment_by_name("pumpfleet-train")
    runs = client.search_runs([exp.experiment_id])
    # RUL trials only: the health models' trials share the experiment (model_kind tag),
    # and other tests of the session may have trained some in this workspace.
    trials = [r for r in runs if "tune.trial_id" in r.data.tags and "model_kind" not in r.data.tags]
    assert len(trials) == len(PUMP_CLASSES)
    for r in trials:
        history = client.get_metric_history(r.info.run_id, "rmse")
        assert [m.step for m in history] == list(range(1, 13))
        assert r.data.tags["feature_snapshot"] == workspace["ingest"]["snapshot_id"]
        assert r.info.status == "FINISHED"
    for cls, info in train["classes"].items():
        assert info["onnx_parity"] <= 1e-5
        assert workspace["challengers"][cls] == info["version"]


def test_first_models_face_the_baseline_gate(workspace: dict[str, Any]) -> None:
    # The fixture's fleet is tiny (one holdout pump per class), so a class may fairly
    # lose to the baseline; the gate must then keep it out, and most classes must learn.
    promoted = 0
    for cls, r in workspace["evaluate"]["classes"].items():
        beats = r["challenger_report"]["rmse"] <= 0.95 * r["baseline_report"]["rmse"]
        assert r["promoted"] == beats, (cls, r["reason"])
        assert r["reason"].startswith("first model")
        assert workspace["champions"][cls] == (r["challenger"] if beats else None)
        promoted += beats
    assert promoted >= 3


def test_a_second_challenger_faces_the_champion(workspace: dict[str, Any]) -> None:
    from pumpfleet.evaluation_run import run_evaluate
    from pumpfleet.search_space import SearchSpace
    from ray_jobs.train import run_train

    s = workspace["settings"]
    reg = Registry(s.tracking_uri)
    # the next version of each class's model (other modules may have registered some)
    before = {c: max(map(int, reg.versions(model_name(c))), default=0) for c in PUMP_CLASSES}
    run_train(s, "latest", SearchSpace(lr=[3e-3], epochs=2, seed=1))
    second = run_evaluate(s)["classes"]
    for cls, r in second.items():
        assert r["challenger"] == str(before[cls] + 1)
        if r["champion_before"] is not None:
            # The reason is the decision's: the overall gate's detail, or every failed gate.
            gates = r["decision"]["gates"]
            failed = "; ".join(
                f"{g['name']}: {g['detail']}" for g in gates if g["status"] == "fail"
            )
            context = f"vs champion v{r['champion_before']}"
            assert r["reason"] == (
                f"{context}: promoted: {gates[0]['detail']}"
                if r["promoted"]
                else f"{context}: rejected: {failed}"
            )
            # Promoted only if every gate passed: better overall by the policy's margin,
            # and no slice worse beyond its margin (a better average may still fail one).
            assert r["promoted"] == all(g["status"] != "fail" for g in r["decision"]["gates"])
            if r["promoted"]:
                assert r["challenger_report"]["rmse"] < 0.98 * r["champion_report"]["rmse"]
        expected = r["challenger"] if r["promoted"] else r["champion_before"]
        assert reg.version_by_alias(model_name(cls), CHAMPION) == expected


def test_export_writes_verifiable_bundles(workspace: dict[str, Any]) -> None:
    from edge_export.export import run_export

    s = workspace["settings"]
    out = run_export(s)
    reg = Registry(s.tracking_uri)
    served = {c for c in PUMP_CLASSES if reg.version_by_alias(model_name(c), CHAMPION)}
    assert set(out["bundles"]) == served and "esp" in served
    for cls, b in out["bundles"].items():
        path = Path(b["bundle"])
        got = bundle.read_bundle(path, out["public_key"])
        assert got.manifest.to_json_object()["model_version"] == reg.version_by_alias(
            model_name(cls), CHAMPION
        )
        assert {"feature_spec.json", "model.onnx", "golden.npz"} <= set(got.members)
        assert set(got.manifest.to_json_object()["variants"]) == {"fp32", "fp32_b1", "fp16", "int8"}
        assert b["onnx_parity_max_abs"] <= 1e-5
    other = bundle.public_key_hex(bundle.load_or_create_key(s.home / "other.pem"))
    with pytest.raises(BundleError):
        bundle.read_bundle(Path(out["bundles"]["esp"]["bundle"]), other)
