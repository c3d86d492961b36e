"""API keys and the admin token: loading, and the access decision (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumpfleet.errors import InputError
from serve_apps.security import (
    Access,
    Secrets,
    check_admin,
    check_scoring,
    digest,
    load_secrets,
)

KEY = "scoring-key-0123456789"
TOKEN = "admin-token-0123456789"


def test_keys_come_from_the_environment_or_files_as_digests(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n\nsecond-key-0123456789\n")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    got = load_secrets(
        {"PUMPFLEET_API_KEYS_FILE": str(keys), "PUMPFLEET_ADMIN_TOKEN_FILE": str(token)}
    )
    assert got.api_keys == (digest(KEY), digest("second-key-0123456789"))
    assert got.admin_tokens == (digest(TOKEN),)
    assert KEY not in repr(got) and TOKEN not in repr(got)
    env = load_secrets({"PUMPFLEET_API_KEYS": f"{KEY}, other-key-0123456789"})
    assert env.api_keys == (digest(KEY), digest("other-key-0123456789")) and env.admin_tokens == ()
    assert load_secrets({}).api_keys == ()


def test_by_default_keys_come_from_the_settings_under_the_documented_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pumpfleet.settings import Settings, get_settings

    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setenv("PUMPFLEET_API_KEYS", f"{KEY},other-key-0123456789")
    monkeypatch.setenv("PUMPFLEET_API_KEYS_FILE", "")  # empty: unset
    monkeypatch.setenv("PUMPFLEET_ADMIN_TOKEN_FILE", str(token))
    settings = Settings()
    assert KEY not in repr(settings)
    want = Secrets(
        api_keys=(digest(KEY), digest("other-key-0123456789")), admin_tokens=(digest(TOKEN),)
    )
    assert load_secrets(settings=settings) == want
    get_settings.cache_clear()
    try:
        assert load_secrets() == want  # get_settings()
    finally:
        get_settings.cache_clear()
    # a mapping (tests) is read by the same variable names, the settings ignored
    assert load_secrets({"PUMPFLEET_API_KEYS": KEY}) == Secrets((digest(KEY),), ())


def test_short_keys_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least 16 characters"):
        load_secrets({"PUMPFLEET_API_KEYS": "short"})
    with pytest.raises(InputError, match=r"PUMPFLEET_API_KEYS_FILE=.*No such file"):
        load_secrets({"PUMPFLEET_API_KEYS_FILE": str(tmp_path / "none")})


def test_scoring_needs_a_known_key() -> None:
    keys = [digest(KEY)]
    assert check_scoring(KEY, keys, insecure=False) is Access.OK
    assert check_scoring(None, keys, insecure=False) is Access.MISSING
    assert check_scoring("", keys, insecure=False) is Access.MISSING
    assert check_scoring(KEY + "x", keys, insecure=False) is Access.MISSING
    assert check_scoring(None, [], insecure=True) is Access.OK


def test_admin_needs_the_token_and_a_scoring_key_is_forbidden() -> None:
    keys, tokens = [digest(KEY)], [digest(TOKEN)]
    assert check_admin(f"Bearer {TOKEN}", None, tokens, keys, False) is Access.OK
    assert check_admin(f"bearer {TOKEN}", None, tokens, keys, False) is Access.OK
    assert check_admin(None, KEY, tokens, keys, False) is Access.FORBIDDEN
    assert check_admin(f"Bearer {KEY}", None, tokens, keys, False) is Access.FORBIDDEN
    assert check_admin(f"Basic {TOKEN}", None, tokens, keys, False) is Access.MISSING
    assert check_admin(None, None, tokens, keys, False) is Access.MISSING
    assert check_admin(None, None, [], [], True) is Access.OK
