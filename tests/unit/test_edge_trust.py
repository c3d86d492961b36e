"""Freeze-proof, rotatable trust (issue 21): bundles carry a release and an expiry; the
device keeps the last it trusted and refuses an older or expired one, saying so; the
trust root is rotated (a new key signed by the old, a threshold of keys) without
re-flashing, and an installed bundle keeps scoring through it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_export.export import signing_key_path
from pumpfleet import bundle, trust, trust_repo
from pumpfleet.errors import BundleError, InputError
from tests.unit.edge_support import EdgeWorkspace, agent_config, shared_workspace

NOW = datetime(2027, 3, 1, tzinfo=UTC)


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


def key(tmp: Path, name: str) -> Any:
    return bundle.load_or_create_key(tmp / "keys" / f"{name}.pem")


def resigned(ws: EdgeWorkspace, tmp: Path, name: str, keys: list[Any], **meta: Any) -> Path:
    """The v2 bundle with manifest fields ``meta`` (None: the field removed), signed by
    ``keys`` (the first in manifest.sig, the rest in manifest.sigs)."""
    src = bundle.read_bundle(ws.bundles["2"], ws.public_key)
    fields = src.manifest.to_json_object()
    for k in ("members", "format", "created"):
        fields.pop(k)
    for k, v in meta.items():
        if v is None:
            fields.pop(k, None)
        else:
            fields[k] = v
    out = tmp / "offers" / f"{name}.pfbundle"
    bundle.write_bundle(out, src.members, fields, keys[0], keys[1:])
    return out


def stamp(days: float) -> str:
    return trust.stamp(datetime.now(UTC) + timedelta(days=days))


# --- pure: roots and freshness ----------------------------------------------------------


def test_a_root_is_taken_in_turn_signed_by_the_old_root_keys_and_its_own(tmp_path: Path) -> None:
    old, new, thief = key(tmp_path, "old"), key(tmp_path, "new"), key(tmp_path, "thief")
    v0 = trust.implicit_root(trust.public_hex(old))
    kid = {n: trust.key_id(trust.public_hex(k)) for n, k in [("old", old), ("new", new)]}
    v1 = trust.Root(
        version=1,
        keys={kid["new"]: trust.public_hex(new)},
        roles={r: trust.RoleKeys(keyids=[kid["new"]]) for r in trust.ROLES},
    ).model_dump(mode="json")
    assert trust.next_root(v0, trust.sign(v1, [old, new])).version == 1
    with pytest.raises(BundleError, match=r"root v1 \(old keys\): signed by 0 trusted key"):
        trust.next_root(v0, trust.sign(v1, [new]))  # the new key alone: anyone could
    with pytest.raises(BundleError, match=r"root v1 \(its own keys\): signed by 0 trusted"):
        trust.next_root(v0, trust.sign(v1, [old]))  # the new keys must agree too
    with pytest.raises(BundleError, match="root v2: not the next root after v0"):
        trust.next_root(v0, trust.sign({**v1, "version": 2}, [old, new]))
    forged = trust.sign(v1, [old, new])
    forged["signed"]["roles"]["targets"]["keyids"] = [trust.key_id(trust.public_hex(thief))]
    with pytest.raises(BundleError, match=r"roles\.targets: key \w+ is not in keys"):
        trust.next_root(v0, forged)


def test_metadata_older_than_the_last_trusted_or_expired_is_stale() -> None:
    assert trust.stale("assignment", 5, "2027-03-02T00:00:00Z", 4, NOW) is None
    assert trust.stale("assignment", 5, None, 5, NOW) is None  # the same again
    assert trust.stale("assignment", 4, "2027-03-02T00:00:00Z", 5, NOW) == (
        "assignment v4 is older than v5, the last this device trusted"
    )
    assert trust.stale("assignment", 6, "2027-02-28T00:00:00Z", 5, NOW) == (
        "assignment v6 expired at 2027-02-28T00:00:00Z"
    )


def test_rotation_in_the_workspace_needs_the_old_root_keys(tmp_path: Path) -> None:
    old, new = key(tmp_path, "old"), key(tmp_path, "new")
    pub = trust.public_hex(old)
    with pytest.raises(InputError, match="root v0 needs 1 of its root keys to sign the next, 0"):
        trust_repo.rotate(tmp_path, pub, [new], {"targets": [new]})
    env = trust_repo.rotate(tmp_path, pub, [old], {"targets": [new]}, now=NOW)
    root = trust_repo.current(tmp_path, pub)
    assert root.version == 1 and root.expires == "2028-02-29T00:00:00Z"
    assert root.role_keys("targets") == [trust.public_hex(new)]
    assert root.role_keys("root") == [pub]  # the root key stays until it is rotated itself
    assert [e["signed"]["version"] for e in trust_repo.after(tmp_path, 0)] == [1]
    assert trust_repo.after(tmp_path, 1) == [] and env["signed"]["version"] == 1


# --- the device: freeze and replay ---------------------------------------------------------


def test_an_expired_or_replayed_older_release_is_refused_and_reported(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    ours = bundle.load_or_create_key(signing_key_path(ws.settings))
    agent = Agent(agent_config(ws, tmp_path / "agent", None))
    first = agent.active.bundle.manifest if agent.active else None
    assert first is not None and first.release is not None and first.expires is not None
    # The export stamps a release in milliseconds and an expiry 90 days on.
    assert abs(first.release / 1000 - time.time()) < 3600
    assert abs((trust.utc(first.expires) - datetime.now(UTC)).days - 90) <= 1
    newer = first.release + 10
    taken = agent.install(resigned(ws, tmp_path, "v3", [ours], model_version="3", release=newer))
    assert taken["accepted"] is True and agent.trust.releases == {"esp": newer}
    # v4 exported before v3 (an older release), held back by a mirror and replayed now.
    replay = resigned(ws, tmp_path, "v4-old", [ours], model_version="4", release=newer - 5)
    done = agent.install(replay)
    assert done["accepted"] is False
    assert done["why"] == (
        f"bundle esp v4 release v{newer - 5} is older than v{newer}, the last this device trusted"
    )
    expired = resigned(
        ws, tmp_path, "v5", [ours], model_version="5", release=newer + 1, expires=stamp(-1)
    )
    done = agent.install(expired)
    assert done["why"].startswith(f"bundle esp v5 release v{newer + 1} expired at ")
    legacy = resigned(ws, tmp_path, "v6", [ours], model_version="6", release=None, expires=None)
    assert agent.install(legacy)["why"] == (
        f"bundle esp v6 has no release number and this device trusts release {newer}: "
        "exported before freeze protection; export it again"
    )
    assert agent.active is not None and agent.active.version == 3
    # The refusal is in its status and its uploads' health.
    status = agent.health()["trust"]
    assert status["refused"]["what"] == "bundle v6.pfbundle"
    assert status["refused"]["why"].startswith("bundle esp v6 has no release number")
    assert status["bundle_releases"] == {"esp": newer} and status["root_version"] == 0
    # What it trusted survives a restart.
    agent.store.close()
    again = Agent(agent_config(ws, tmp_path / "agent", None))
    assert again.trust.releases == {"esp": newer}
    assert "older than" in again.install(replay)["why"]


def test_bundles_exported_before_releases_still_install_on_a_device_that_has_only_those(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    ours = bundle.load_or_create_key(signing_key_path(ws.settings))
    old_v1 = resigned(ws, tmp_path, "old-v1", [ours], model_version="1", release=None, expires=None)
    old_v2 = resigned(ws, tmp_path, "old-v2", [ours], model_version="2", release=None, expires=None)
    agent = Agent(agent_config(ws, tmp_path / "agent", None, initial_bundle=old_v1))
    assert agent.active is not None and agent.active.version == 1
    assert agent.install(old_v2)["accepted"] is True and agent.trust.releases == {}


# --- the device: key rotation ----------------------------------------------------------------


def test_a_key_rotation_reaches_devices_that_trust_the_old_key(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    ours = bundle.load_or_create_key(signing_key_path(ws.settings))
    k2, k3, thief = key(tmp_path, "k2"), key(tmp_path, "k3"), key(tmp_path, "thief")
    home = tmp_path / "cloud"
    cfg = agent_config(ws, tmp_path / "agent", None)
    agent = Agent(cfg)
    release = (agent.active.bundle.manifest.release or 0) if agent.active else 0
    # A root signed by a stranger alone is refused, and said so.
    bogus = trust.implicit_root(trust.public_hex(thief)).model_dump(mode="json")
    (cfg.updates / "bogus.root.json").write_text(
        json.dumps(trust.sign({**bogus, "version": 1}, [thief]))
    )
    agent.step()
    assert agent.trust.root.version == 0
    assert agent.health()["trust"]["refused"]["why"] == (
        "root v1 (old keys): signed by 0 trusted key(s), 1 needed"
    )
    # Root v1: bundles are signed by k2 now; v2: by two of k2 and k3. Both are signed by
    # the root key the device trusts (ours, which keeps the root role).
    pub = ws.public_key
    trust_repo.rotate(home, pub, [ours], {"targets": [k2]})
    trust_repo.rotate(home, pub, [ours], {"targets": [k2, k3]}, {"targets": 2})
    for env in trust_repo.after(home, 0):
        name = f"root-{env['signed']['version']}.root.json"
        (cfg.updates / name).write_text(json.dumps(env))
    agent.step()
    assert agent.trust.root.version == 2
    by_old = resigned(ws, tmp_path, "v3-old-key", [ours], model_version="3", release=release + 1)
    assert (
        agent.install(by_old)["why"] == "v3-old-key.pfbundle: signed by 0 trusted key(s), 2 needed"
    )
    by_one = resigned(ws, tmp_path, "v3-k2", [k2], model_version="3", release=release + 2)
    assert agent.install(by_one)["why"] == "v3-k2.pfbundle: signed by 1 trusted key(s), 2 needed"
    by_two = resigned(ws, tmp_path, "v3-k2k3", [k2, k3], model_version="3", release=release + 3)
    assert agent.install(by_two)["accepted"] is True
    # A restart: the rotated root is kept, and the previous bundle (signed by the key
    # rotated out) still verifies on disk as the fallback.
    agent.store.close()
    again = Agent(cfg)
    assert again.trust.root.version == 2 and again.active is not None
    assert again.active.version == 3 and again.fallback is not None
    assert again.fallback.version == 1
    assert again.health()["trust"]["root_version"] == 2


def test_the_trust_commands_show_and_rotate_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pumpfleet.settings import get_settings
    from pumpfleet_cli.main import main

    monkeypatch.setenv("PUMPFLEET_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv("PUMPFLEET_SIGNING_KEY", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["edge", "trust", "show"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["version"] == 0 and shown["roles"]["targets"]["threshold"] == 1
        new = tmp_path / "k2.pem"
        assert main(["edge", "trust", "rotate", "--role", "assignment", "--key", str(new)]) == 0
        said = capsys.readouterr().out
        assert said.startswith("root v1 written to ") and "assignment now signed by 1 of 1" in said
        assert main(["edge", "trust", "show"]) == 0
        root = trust.parse_root(json.loads(capsys.readouterr().out))
        k2 = trust.public_hex(bundle.load_or_create_key(new))
        assert root.version == 1 and root.role_keys("assignment") == [k2]
        assert root.role_keys("targets") == root.role_keys("root") != [k2]
        assert main(["edge", "trust", "rotate", "--role", "targets"]) == 2
        assert capsys.readouterr().err.strip() == (
            "pumpfleet edge: error: rotate: --role and --key are required"
        )
    finally:
        get_settings.cache_clear()
