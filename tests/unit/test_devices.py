"""Device credentials (pumpfleet.devices, `pumpfleet edge device ...`): issued once,
checked in constant time, revoked for good, a device only as itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pumpfleet import devices
from pumpfleet.errors import InputError
from pumpfleet_cli.main import main


def test_a_token_names_its_device_and_nothing_else(tmp_path: Path) -> None:
    book = str(tmp_path / "devices.json")
    t7 = devices.issue(book, "rig-7")
    t8 = devices.issue(book, "rig-8")
    v = devices.Verifier(devices.load(book))
    assert (v.device_of(t7), v.device_of(t8)) == ("rig-7", "rig-8")
    forged = t7.replace("rig-7", "rig-8", 1)  # another device's id, this device's secret
    for bad in (forged, t7[:-1], "pfd.rig-7", "pfd..x", "", None, "an-api-key-of-16+ chars"):
        assert v.device_of(bad) is None, bad
    stored = (tmp_path / "devices.json").read_text()
    assert t7.rsplit(".", 1)[1] not in stored  # only digests are kept


def test_revoked_and_reissued_tokens(tmp_path: Path) -> None:
    book = str(tmp_path / "devices.json")
    old = devices.issue(book, "rig-7")
    new = devices.issue(book, "rig-7")  # a replacement: the old token stops working
    assert devices.Verifier(devices.load(book)).device_of(old) is None
    assert devices.Verifier(devices.load(book)).device_of(new) == "rig-7"
    devices.revoke(book, "rig-7")
    assert devices.Verifier(devices.load(book)).device_of(new) is None
    assert devices.listing(book)["rig-7"]["revoked"] is not None
    with pytest.raises(InputError, match="--device rig-9: no such device"):
        devices.revoke(book, "rig-9")
    with pytest.raises(InputError, match="not a plain file name"):
        devices.issue(book, "../rig")


def test_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path))
    from pumpfleet.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["edge", "device", "issue", "--device", "rig-7"]) == 0
        token = capsys.readouterr().out.splitlines()[1]
        assert token.startswith("pfd.rig-7.") and len(token) > 40
        assert main(["edge", "device", "list"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert list(listed) == ["rig-7"] and listed["rig-7"]["revoked"] is None
        assert main(["edge", "device", "revoke"]) == 2
        assert capsys.readouterr().err.strip().endswith("--device: required to revoke a credential")
        assert main(["edge", "device", "revoke", "--device", "rig-7"]) == 0
        assert (
            devices.Verifier(devices.load(str(tmp_path / "devices.json"))).device_of(token) is None
        )
    finally:
        get_settings.cache_clear()
