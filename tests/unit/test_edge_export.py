"""Edge export on a real MLflow (SQLite) and a small snapshot: variants, their checks
and measurements, golden windows, the TensorRT check, the bundle logged to its run, and
the ``pumpfleet edge`` commands."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_export import trt, variants
from edge_export.cli import read_public_key
from pumpfleet import bundle
from pumpfleet.errors import BundleError, InputError, ParityError
from pumpfleet.features import window_features
from pumpfleet.manifest import BundleManifest
from pumpfleet.runtime import run, session
from pumpfleet_cli.main import main
from tests.unit.edge_support import (
    ANOMALY_SPEC,
    SPEC,
    EdgeWorkspace,
    HealthWorkspace,
    raw_windows,
    shared_health_workspace,
    shared_workspace,
)


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


def test_bundle_holds_every_variant_measured_on_the_holdout(ws: EdgeWorkspace) -> None:
    b = bundle.read_bundle(ws.bundles["2"], ws.public_key)
    m = b.manifest.to_json_object()
    assert (m["pump_class"], m["model_version"], m["min_agent_version"]) == ("esp", "2", "0.2.0")
    assert m["mlflow_run_id"] and m["created"].endswith("Z")
    assert set(m["variants"]) == set(variants.VARIANTS)
    assert set(b.members) == {
        *variants.FILES.values(),
        "feature_spec.json",
        "golden.npz",
        "build_profile.json",
    }
    v = m["variants"]
    assert v["fp32"]["size_ratio"] == 1.0 and v["fp32"]["max_abs_vs_fp32"] == 0.0
    assert v["fp32_b1"]["max_abs_vs_fp32"] <= 1e-5
    # Reduced precision costs little accuracy on this model and saves weight bytes.
    assert v["int8"]["rmse_ratio"] <= m["accuracy_limit"]["rmse_ratio"]
    assert v["int8"]["weight_ratio"] <= 0.45 and v["fp16"]["weight_ratio"] <= 0.55
    assert v["int8"]["bytes"] < v["fp32"]["bytes"] and v["fp16"]["bytes"] < v["fp32"]["bytes"]
    for name in variants.VARIANTS:
        model = onnx.load_from_string(b.members[variants.FILES[name]])
        assert model.opset_import[0].version == 17
        variants.check(b.members[variants.FILES[name]])
    ops = {n.op_type for n in onnx.load_from_string(b.members["model_int8.onnx"]).graph.node}
    # Weight-only: the weights are dequantised where they are read, nothing else is.
    assert "DequantizeLinear" in ops and "QuantizeLinear" not in ops


def test_batch_1_variant_is_static_and_fp32_io_is_kept(ws: EdgeWorkspace) -> None:
    b = bundle.read_bundle(ws.bundles["2"], ws.public_key)
    b1 = onnx.load_from_string(b.members["model_b1.onnx"])
    assert [d.dim_value for d in b1.graph.input[0].type.tensor_type.shape.dim] == [1, 12, 3]
    for name in ("model.onnx", "model_fp16.onnx", "model_int8.onnx"):
        g = onnx.load_from_string(b.members[name]).graph
        assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert g.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    x = window_features(raw_windows(5, 9)[0], SPEC)
    assert run(session(b.members["model_fp16.onnx"]), x).shape == (5, 2)
    profiles = json.loads(b.members["build_profile.json"])
    assert profiles["fp32_b1"]["static"] is True
    assert profiles["int8"]["inputs"]["window"] == {
        "min": [1, 12, 3],
        "opt": [1, 12, 3],
        "max": [trt.MAX_BATCH, 12, 3],
    }
    assert all(c["ok"] for c in b.manifest.to_json_object()["tensorrt"].values())


def test_golden_windows_reproduce_the_fp32_outputs(ws: EdgeWorkspace) -> None:
    b = bundle.read_bundle(ws.bundles["1"], ws.public_key)
    g = np.load(io.BytesIO(b.members["golden.npz"]), allow_pickle=False)
    assert g["raw"].shape == (32, 12, 3) and g["expected"].shape == (32, 2)
    got = run(session(b.members["model.onnx"]), window_features(g["raw"], SPEC))
    np.testing.assert_allclose(got, g["expected"], atol=1e-6)


def test_bundle_is_an_artifact_of_its_model_version_run(ws: EdgeWorkspace) -> None:
    m = bundle.read_bundle(ws.bundles["2"], ws.public_key).manifest.to_json_object()
    assert ws.registry.artifacts(m["mlflow_run_id"], "edge_bundle") == [
        "edge_bundle/pumpfleet-esp-v2.pfbundle"
    ]
    assert ws.exports["2"]["artifact"].endswith("/edge_bundle/pumpfleet-esp-v2.pfbundle")


def test_trt_check_names_unsupported_ops_and_unbounded_shapes() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", "steps", 3])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "steps", 3])
    node = helper.make_node("MyCustomOp", ["window"], ["scores"], domain="custom")
    graph = helper.make_graph([node], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    c = trt.compatibility(model.SerializeToString())
    assert not c["ok"] and c["ops"] == ["custom.MyCustomOp"] and c["profile"] is None
    assert c["problems"] == [
        "unsupported ops: custom.MyCustomOp",
        "input 'window' axis 1 (steps) is not static: TensorRT needs it bounded",
    ]


def test_a_graph_at_another_opset_fails_the_check() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["window"], ["y"])], "g", [x], [x])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ParityError, match="opset 13"):
        variants.check(model.SerializeToString())


def test_trt_builder_says_in_one_line_that_tensorrt_is_absent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reason = trt.unavailable()
    if reason is None:
        pytest.skip("TensorRT is installed here")
    assert "TensorRT is not installed" in reason and "\n" not in reason
    assert trt.main(["x.pfbundle", "--public-key", "00"]) == 0
    assert capsys.readouterr().out.strip() == reason


@pytest.mark.gpu
@pytest.mark.skipif(trt.unavailable() is not None, reason="TensorRT is not installed")
def test_trt_builds_and_caches_an_engine(ws: EdgeWorkspace, tmp_path: Path) -> None:
    b = bundle.read_bundle(ws.bundles["2"], ws.public_key)
    profiles = json.loads(b.members["build_profile.json"])
    for name in ("fp32_b1", "fp16", "int8"):
        v = b.manifest.to_json_object()["variants"][name]
        path = trt.build_engine(b.members[v["file"]], v["precision"], profiles[name], tmp_path)
        again = trt.build_engine(b.members[v["file"]], v["precision"], profiles[name], tmp_path)
        assert path == again and path.stat().st_size > 0


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(list(argv)))
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_keygen_writes_a_private_key_only_to_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "keys" / "site.pem"
    code, out, err = cli(capsys, "edge", "keygen", "--out", str(key))
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = (tmp_path / "keys" / "site.pub").read_text().strip()
    assert f"public key {pub}" in out and "PRIVATE" not in out and key.read_text() not in out
    code, _, err = cli(capsys, "edge", "keygen", "--out", str(key))
    assert code == 2 and "never overwrites" in err and len(err.strip().splitlines()) == 1


def test_verify_says_ok_or_why_in_one_line(
    ws: EdgeWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ws.bundles["2"]
    code, out, _ = cli(capsys, "edge", "verify", str(path), "--public-key", ws.public_key)
    assert code == 0 and out.startswith("OK pumpfleet-esp-v2.pfbundle: esp v2")
    pub_file = tmp_path / "k.pub"
    pub_file.write_text(ws.public_key + "\n")
    assert cli(capsys, "edge", "verify", str(path), "--public-key", str(pub_file))[0] == 0
    other = bundle.public_key_hex(bundle.load_or_create_key(tmp_path / "other.pem"))
    code, out, err = cli(capsys, "edge", "verify", str(path), "--public-key", other)
    assert code == 2 and out == ""
    assert (
        err.strip() == "pumpfleet edge: error: pumpfleet-esp-v2.pfbundle: signature does not verify"
    )
    code, _, err = cli(
        capsys, "edge", "verify", str(tmp_path / "no.pfbundle"), "--public-key", other
    )
    assert code == 2 and "no such bundle" in err
    with pytest.raises(InputError, match="neither hex nor a readable file"):
        read_public_key("zz")


def test_edge_bundle_exports_one_class(
    ws: EdgeWorkspace,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pumpfleet.settings import get_settings

    monkeypatch.setenv("PUMPFLEET_HOME", str(ws.settings.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    try:
        code, out, err = cli(capsys, "edge", "bundle", "--class", "esp", "--out", str(tmp_path))
        assert code == 0, err
        made = json.loads(out)["bundles"]["esp"]
        assert Path(made["bundle"]).parent == tmp_path / "esp"
        code, _, err = cli(capsys, "edge", "bundle", "--class", "nope")
        assert code == 2 and "--class nope" in err
    finally:
        get_settings.cache_clear()
    with pytest.raises(BundleError):
        bundle.read_bundle(Path(made["bundle"]), "00" * 32)


@pytest.mark.parametrize(
    "cfg",
    [
        {"kind": "cnn"},
        {"kind": "tcn"},
        {"kind": "gru"},
        {"kind": "gru", "members": 2},
    ],
    ids=["cnn", "tcn", "gru", "gru-ensemble"],
)
def test_every_model_kind_makes_every_variant(cfg: dict[str, object]) -> None:
    import torch

    from pumpfleet.models import ModelConfig, build_model
    from pumpfleet.onnx_io import to_onnx

    torch.manual_seed(0)
    model = build_model(3, ModelConfig(hidden=8, **cfg))  # type: ignore[arg-type]
    raw, rul = raw_windows(200, 5)
    x = window_features(raw, SPEC)
    made = variants.make_variants(to_onnx(model, 12, 3))
    measured = variants.measure(made, x, rul, SPEC)
    assert measured["fp32_b1"]["max_abs_vs_fp32"] <= 1e-5
    assert measured["fp16"]["max_abs_vs_fp32"] <= 1e-2
    assert measured["int8"]["max_abs_vs_fp32"] <= 0.1
    for v in made:
        c = trt.compatibility(v.onnx)
        assert c["ok"], (v.name, c["problems"])


# --- the anomaly (health) model in the bundle ---------------------------------------------


@pytest.fixture
def hws(tmp_path_factory: pytest.TempPathFactory) -> HealthWorkspace:
    return shared_health_workspace(tmp_path_factory.getbasetemp())


def test_bundle_carries_the_anomaly_champion_in_fp32_and_int8_with_its_health_spec(
    hws: HealthWorkspace,
) -> None:
    from pumpfleet.anomaly import window_errors
    from pumpfleet.features import FeatureSpec
    from pumpfleet.health import HealthSpec

    # v1 was exported before the class had an anomaly model: RUL only, as before.
    old = bundle.read_bundle(hws.bundles["1"], hws.public_key)
    rul_members = [
        *variants.FILES.values(),
        "build_profile.json",
        "feature_spec.json",
        "golden.npz",
    ]
    assert old.manifest.anomaly is None and sorted(old.members) == sorted(rul_members)
    assert hws.exports["1"]["anomaly"] == {"skipped": "no pumpfleet-esp-anomaly@champion"}
    assert hws.bundles["2"].name == "pumpfleet-esp-v2-anomaly-v1.pfbundle"
    assert (hws.exports["1"]["bundle_id"], hws.exports["2"]["bundle_id"]) == ("v1", "v2-anomaly-v1")
    b = bundle.read_bundle(hws.bundles["2"], hws.public_key)
    a = b.manifest.to_json_object()["anomaly"]
    assert (a["kind"], a["model_name"], a["version"]) == ("anomaly", "pumpfleet-esp-anomaly", "1")
    assert a["threshold"] == pytest.approx(hws.health.threshold)
    assert a["target_far"] == 0.05 and a["model_kind"] == "conv_ae"
    anomaly_members = ["anomaly.onnx", "anomaly_int8.onnx", "health_spec.json"]
    assert sorted(b.members) == sorted([*rul_members, *anomaly_members, a["feature_spec_file"]])
    assert HealthSpec.from_json(b.members["health_spec.json"]) == hws.health
    assert FeatureSpec.from_json(b.members[a["feature_spec_file"]]) == ANOMALY_SPEC
    # The RUL part is what it was.
    assert set(b.manifest.to_json_object()["variants"]) == set(variants.VARIANTS)
    # The FP32 ONNX gives the torch model's window errors.
    x = window_features(raw_windows(50, 7)[0], ANOMALY_SPEC)
    got = run(session(b.members["anomaly.onnx"]), x)[:, 0]
    np.testing.assert_allclose(got, window_errors(hws.anomaly, x), rtol=1e-5, atol=1e-6)
    assert a["onnx_parity_max_rel"] <= 1e-5
    # INT8 holds its weights as int8, is smaller, and is measured against FP32 by flags
    # and health scores.
    int8 = onnx.load_from_string(b.members["anomaly_int8.onnx"])
    ops = {n.op_type for n in int8.graph.node}
    assert "DequantizeLinear" in ops and "QuantizeLinear" not in ops
    v = a["variants"]
    assert v["int8"]["bytes"] < v["fp32"]["bytes"]
    assert v["fp32"]["flag_agreement"] == 1.0 and v["fp32"]["max_health_diff"] == 0.0
    assert v["int8"]["flag_agreement"] >= 0.98 and v["int8"]["max_health_diff_near"] <= 0.2
    limit = a["accuracy_limit"]
    assert v["int8"]["within_accuracy"] == (
        v["int8"]["flag_agreement"] >= limit["flag_agreement"]
        and v["int8"]["max_health_diff_near"] <= limit["max_health_diff_near"]
    )
    assert all(c["ok"] for c in a["tensorrt"].values())
    # Golden windows carry the FP32 anomaly model's errors for the device's self-test.
    g = np.load(io.BytesIO(b.members["golden.npz"]), allow_pickle=False)
    np.testing.assert_allclose(
        g["anomaly_errors"],
        window_errors(hws.anomaly, window_features(g["raw"], ANOMALY_SPEC)),
        rtol=1e-5,
    )
    # The bundle is an artifact of the anomaly model's run too.
    assert hws.registry.artifacts(a["mlflow_run_id"], "edge_bundle") == [
        "edge_bundle/pumpfleet-esp-v2-anomaly-v1.pfbundle"
    ]
    assert (
        hws.exports["2"]["anomaly"]["variants"]["int8"]["within_accuracy"]
        == (v["int8"]["within_accuracy"])
    )


def test_verify_names_the_health_model_and_its_variants(
    hws: HealthWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_export.cli import health_model

    m = bundle.read_bundle(hws.bundles["2"], hws.public_key).manifest.to_json_object()
    off = "" if m["anomaly"]["variants"]["int8"]["within_accuracy"] else " (int8 off its limits"
    code, out, _ = cli(
        capsys, "edge", "verify", str(hws.bundles["2"]), "--public-key", hws.public_key
    )
    assert code == 0 and out.startswith("OK pumpfleet-esp-v2-anomaly-v1.pfbundle: esp v2")
    assert f"fp16,fp32,fp32_b1,int8; health model v1, variants fp32,int8{off}" in out
    code, out, _ = cli(
        capsys, "edge", "verify", str(hws.bundles["1"]), "--public-key", hws.public_key
    )
    assert code == 0 and out.rstrip().endswith("int8; no health model")
    from tests.unit.edge_support import manifest

    off_limits = manifest(2, 3).to_json_object()
    off_limits["anomaly"]["variants"] = {
        "fp32": {"file": "anomaly.onnx", "within_accuracy": True},
        "int8": {"file": "anomaly.onnx", "within_accuracy": False},
    }
    assert health_model(BundleManifest.parse(off_limits)) == (
        "health model v3, variants fp32,int8 (int8 off its limits: fp32 runs)"
    )


def test_an_int8_anomaly_variant_off_its_limits_is_left_to_fp32(hws: HealthWorkspace) -> None:
    from edge_agent.health import anomaly_variant
    from edge_export import anomaly
    from pumpfleet.manifest import AnomalyEntry
    from pumpfleet.onnx_io import to_onnx

    fp32 = to_onnx(hws.anomaly, 12, 3)
    x = window_features(raw_windows(300, 2)[0], ANOMALY_SPEC)
    # Scales calibrated on windows a tenth of their size: everything else clips.
    made = {"fp32": fp32, "int8": variants.to_int8_static(fp32, x[:200] * 0.1)}
    m = anomaly.measure(made, x, hws.health)
    assert m["int8"]["flag_agreement"] < anomaly.MIN_FLAG_AGREEMENT
    assert m["int8"]["max_health_diff_near"] > anomaly.MAX_HEALTH_DIFF
    assert m["int8"]["within_accuracy"] is False and m["fp32"]["within_accuracy"] is True
    # The device runs FP32 beside any RUL variant then; INT8 only where it was fit.
    assert anomaly_variant(AnomalyEntry(version="1", variants=m), "int8") == "fp32"
    fit = AnomalyEntry(version="1", variants={**m, "int8": {**m["int8"], "within_accuracy": True}})
    assert anomaly_variant(fit, "int8") == "int8"
    assert anomaly_variant(fit, "fp16") == "fp32"
    assert anomaly_variant(None, "int8") == "fp32"


class _Registry:
    """Just what :func:`edge_export.anomaly.champion` asks a registry."""

    def __init__(self, model: object | None) -> None:
        self.model = model

    def version_by_alias(self, name: str, alias: str) -> str | None:
        return None if self.model is None else "4"

    def load(self, name: str, alias: str) -> object:
        return self.model


def test_an_anomaly_champion_the_device_cannot_run_is_left_out() -> None:
    from edge_export.anomaly import champion
    from pumpfleet.registry import LoadedModel

    def model(spec: object = SPEC, **config: object) -> LoadedModel:
        cfg = {"kind": "anomaly", "model_kind": "conv_ae", "health": {}, **config}
        return LoadedModel("pumpfleet-esp-anomaly", "4", "r", b"", spec, cfg, Path("x"), {})  # type: ignore[arg-type]

    def why(m: LoadedModel | None) -> str | None:
        return champion(_Registry(m), "esp", SPEC)[1]  # type: ignore[arg-type]

    assert why(None) == "no pumpfleet-esp-anomaly@champion"
    assert why(model()) is None
    assert "not an ONNX conv_ae" in str(why(model(model_kind="pca")))
    longer = SPEC.model_copy(update={"window": 24})
    assert "reads 24 x" in str(why(model(longer)))
    fewer = SPEC.model_copy(update={"channels": ["motor_temp", "flow"]})
    assert "the RUL model 12 x" in str(why(model(fewer)))
