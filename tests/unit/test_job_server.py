"""The Ray job server behind the triggers: its token comes from Settings (never read from
the environment by the job itself), and no address means no server."""

from __future__ import annotations

from typing import Any

import pytest

from pumpfleet.job_options import RetrainOptions
from pumpfleet.settings import Settings
from ray_jobs import triggers


def test_a_submitted_retrain_carries_the_settings_token(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, RetrainOptions, str | None]] = []

    def submit(address: str, options: RetrainOptions, token: str | None = None, **_: Any) -> str:
        sent.append((address, options, token))
        return "pumpfleet-retrain-1"

    monkeypatch.setattr(triggers, "submit_retrain", submit)
    monkeypatch.setattr(triggers, "get_settings", lambda: Settings(ray_auth_token="from-settings"))
    assert triggers.JobServer("http://head:8265").submit(["esp"], "drift") == "pumpfleet-retrain-1"
    address, options, token = sent[0]
    assert (address, options.classes, options.reason, token) == (
        "http://head:8265",
        ["esp"],
        "drift",
        "from-settings",
    )
    triggers.JobServer("http://head:8265", token="given").submit(["rod"], "x")
    assert sent[1][2] == "given"


def test_no_address_is_no_server() -> None:
    settings = Settings(ray_auth_token="t")
    assert triggers.job_server(None, settings) is None
    server = triggers.job_server("http://head:8265", settings)
    assert server is not None and (server.address, server.token) == ("http://head:8265", "t")
