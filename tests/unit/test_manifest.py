"""The bundle manifest contract (pumpfleet.manifest): what the exporter may write and the
device accepts; a bundle that breaks it is refused naming the field, and a bundle exported
before the contract (agent 0.1) still installs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from pumpfleet import bundle
from pumpfleet.errors import BundleError
from pumpfleet.manifest import MANIFEST, SIGNATURE, BundleManifest
from tests.unit.edge_support import EdgeWorkspace, agent_config, shared_workspace

HASH = "0" * 64


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


def parse(**fields: Any) -> BundleManifest:
    base = {"pump_class": "esp", "model_version": "1", "members": {"model.onnx": HASH}}
    return BundleManifest.parse({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_version": "latest"}, "model_version: .*not a model version number"),
        ({"pump_class": ""}, "pump_class: String should have at least 1 character"),
        ({"members": {"../x.onnx": HASH}}, r"members\.\.\./x\.onnx.*not a plain file name"),
        ({"members": {"/etc/passwd": HASH}}, "not a plain file name"),
        ({"members": {".hidden": HASH}}, "not a plain file name"),
        ({"members": {"model.onnx": "abc"}}, r"members\.model\.onnx: String should match"),
        ({"variants": {"fp32": {"file": "other.onnx"}}}, "'other.onnx', which is not a member"),
        ({"variants": {"fp32": {"file": "model.onnx", "precision": "fp64"}}}, "precision"),
        ({"golden": {"file": "golden.npz"}}, "'golden.npz', which is not a member"),
        ({"variants": {}}, "variants: Dictionary should have at least 1 item"),
    ],
)
def test_a_manifest_that_breaks_the_contract_is_refused_naming_the_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        parse(**fields)


def test_unknown_fields_of_a_newer_exporter_are_ignored_and_defaults_fill_old_ones() -> None:
    m = parse(some_future_field={"x": 1})
    assert "some_future_field" not in m.to_json_object()
    # A bundle from before variants: its one model.onnx is fp32.
    assert m.variants["fp32"].file == "model.onnx" and m.variants["fp32"].precision == "fp32"
    assert m.anomaly is None and m.rolled_back.rul == [] and m.min_agent_version == "0"


def test_the_exporter_cannot_write_a_manifest_outside_the_contract(tmp_path: Path) -> None:
    key = bundle.load_or_create_key(tmp_path / "k.pem")
    members = {"model.onnx": b"m"}
    with pytest.raises(BundleError, match="model_versoin: not a field of the bundle manifest"):
        bundle.write_bundle(tmp_path / "b.pfbundle", members, {"model_versoin": "1"}, key)
    with pytest.raises(BundleError, match="model_version: Field required"):
        bundle.write_bundle(tmp_path / "b.pfbundle", members, {"pump_class": "esp"}, key)
    assert not (tmp_path / "b.pfbundle").exists()


def resigned(src: Path, out: Path, key_path: Path, change: Any) -> Path:
    """The bundle at ``src`` with its manifest object and members changed by ``change``
    and signed again with the key at ``key_path`` (as an exporter with that key would)."""
    with tarfile.open(src) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(files.pop(MANIFEST))
    files.pop(SIGNATURE)
    change(manifest, files)
    manifest["members"] = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    key = bundle.load_or_create_key(key_path)
    with tarfile.open(out, "w") as tar:
        for name, data in [(MANIFEST, body), (SIGNATURE, key.sign(body)), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_a_bundle_exported_before_the_contract_still_installs(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    """What the exporter wrote for agent 0.1: min_agent_version 0.1.0 and a second copy of
    the alert threshold in thresholds.json (not read: the feature spec's is the one)."""
    from edge_export.export import signing_key_path

    def as_before(manifest: dict[str, Any], files: dict[str, bytes]) -> None:
        manifest["min_agent_version"] = "0.1.0"
        spec = json.loads(files["feature_spec.json"])
        thresholds = {"failure_probability_alert": spec["alert_threshold"], "horizon_hours": 48}
        files["thresholds.json"] = json.dumps(thresholds, indent=2).encode()

    old = resigned(
        ws.bundles["2"], tmp_path / "legacy-v2.pfbundle", signing_key_path(ws.settings), as_before
    )
    agent = Agent(agent_config(ws, tmp_path / "agent", None))
    assert agent.active is not None and agent.active.version == 1
    done = agent.install(old)
    assert done["accepted"] is True, done
    assert agent.active.version == 2
    assert agent.active.bundle.alert_threshold == agent.active.spec.alert_threshold


def test_a_signed_manifest_naming_a_path_is_refused_before_install(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    from edge_export.export import signing_key_path

    def escape(manifest: dict[str, Any], files: dict[str, bytes]) -> None:
        files["../escape.onnx"] = files.pop("model.onnx")
        manifest["variants"]["fp32"]["file"] = "../escape.onnx"

    bad = resigned(
        ws.bundles["2"], tmp_path / "bad.pfbundle", signing_key_path(ws.settings), escape
    )
    with pytest.raises(BundleError, match="not a plain file name"):
        bundle.read_bundle(bad, ws.public_key)
    agent = Agent(agent_config(ws, tmp_path / "agent", None))
    done = agent.install(bad)
    assert done["accepted"] is False and "not a plain file name" in done["why"]
    assert agent.active is not None and agent.active.version == 1
