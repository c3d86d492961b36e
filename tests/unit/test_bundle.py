from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from pumpfleet import bundle
from pumpfleet.errors import BundleError
from pumpfleet.manifest import BundleManifest

MEMBERS = {"model.onnx": b"\x08\x01onnx", "feature_spec.json": b'{"window": 24}'}


def make(tmp_path: Path) -> tuple[Path, str]:
    key = bundle.load_or_create_key(tmp_path / "keys" / "k.pem")
    path = tmp_path / "esp-v1.pfbundle"
    bundle.write_bundle(path, MEMBERS, {"pump_class": "esp", "model_version": "1"}, key)
    return path, bundle.public_key_hex(key)


def test_round_trip_verifies(tmp_path: Path) -> None:
    path, pub = make(tmp_path)
    b = bundle.read_bundle(path, pub)
    assert b.members == MEMBERS
    assert b.manifest.pump_class == "esp" and set(b.manifest.members) == set(MEMBERS)
    assert (tmp_path / "keys" / "k.pem").stat().st_mode & 0o077 == 0  # private key is private
    assert (tmp_path / "keys" / "k.pub").read_text().strip() == pub
    # The same key is loaded again, not replaced.
    assert bundle.public_key_hex(bundle.load_or_create_key(tmp_path / "keys" / "k.pem")) == pub


def test_wrong_key_is_rejected(tmp_path: Path) -> None:
    path, _ = make(tmp_path)
    other = bundle.public_key_hex(bundle.load_or_create_key(tmp_path / "other.pem"))
    with pytest.raises(BundleError, match="signature does not verify"):
        bundle.read_bundle(path, other)


def _rewrite(path: Path, change: dict[str, bytes]) -> None:
    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files.update(change)
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_changed_member_is_rejected(tmp_path: Path) -> None:
    path, pub = make(tmp_path)
    _rewrite(path, {"model.onnx": b"evil"})
    with pytest.raises(BundleError, match=r"model\.onnx does not match its sha256"):
        bundle.read_bundle(path, pub)


def test_changed_manifest_is_rejected(tmp_path: Path) -> None:
    path, pub = make(tmp_path)
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile(bundle.MANIFEST).read())  # type: ignore[union-attr]
    manifest["model_version"] = "99"
    _rewrite(path, {bundle.MANIFEST: json.dumps(manifest).encode()})
    with pytest.raises(BundleError, match="signature does not verify"):
        bundle.read_bundle(path, pub)


def test_garbage_file_is_rejected_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "x.pfbundle"
    path.write_bytes(b"not a tar" * 400)
    with pytest.raises(BundleError) as e:
        bundle.read_bundle(path, "00" * 32)
    # tarfile's own message is five lines, one per compression it tried
    assert str(e.value) == "x.pfbundle: not a readable bundle (not a tar archive)"


@pytest.mark.parametrize(
    "member", ["anomaly.onnx", "anomaly_int8.onnx", "health_spec.json", bundle.MANIFEST]
)
def test_a_changed_anomaly_model_or_health_spec_is_rejected(
    member: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real bundle with an anomaly model: its models, health spec and the manifest's
    threshold are covered by the signature like every other member."""
    import shutil

    from tests.unit.edge_support import shared_health_workspace

    ws = shared_health_workspace(tmp_path_factory.getbasetemp())
    path = tmp_path / "esp-v2.pfbundle"
    shutil.copy(ws.bundles["2"], path)
    original = bundle.read_bundle(path, ws.public_key)
    why = f"{re.escape(member)} does not match its sha256"
    if member == bundle.MANIFEST:
        manifest = original.manifest.to_json_object()
        manifest["anomaly"] = {**manifest["anomaly"], "threshold": 1e9}  # never alarm
        change = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        why = "signature does not verify"
    elif member == "health_spec.json":
        spec = json.loads(original.members[member])
        change = json.dumps({**spec, "margin": spec["margin"] * 100}).encode()
    else:
        data = bytearray(original.members[member])
        data[len(data) // 2] ^= 0xFF  # one byte of the weights
        change = bytes(data)
    _rewrite(path, {member: change})
    with pytest.raises(BundleError, match=why):
        bundle.read_bundle(path, ws.public_key)


def manifest(**fields: object) -> BundleManifest:
    return BundleManifest.parse(
        {"pump_class": "esp", "members": {"model.onnx": "0" * 64}, **fields}
    )


def test_bundle_id_from_the_manifest_and_back() -> None:
    rul_only = bundle.BundleId.of(manifest(model_version="12"))
    health = {"version": "3", "variants": {"fp32": {"file": "model.onnx"}}}
    with_health = bundle.BundleId.of(
        manifest(
            model_version="12",
            anomaly=health,
            members={
                n: "0" * 64 for n in ("model.onnx", "health_spec.json", "anomaly_feature_spec.json")
            },
        )
    )
    assert (str(rul_only), str(with_health)) == ("v12", "v12-anomaly-v3")
    assert bundle.BundleId.parse("v12-anomaly-v3") == with_health == bundle.BundleId(12, 3)
    assert bundle.BundleId.parse("v12") == rul_only
    for bad in ("12", "v12-anomaly", "v1/../v2", ""):
        with pytest.raises(BundleError, match="not a bundle id"):
            bundle.BundleId.parse(bad)
    with pytest.raises(BundleError, match=r"anomaly\.version: .*'latest' is not a model version"):
        manifest(model_version="12", anomaly={**health, "version": "latest"})
