"""``pumpfleet serve`` stops Serve gracefully on SIGTERM as on Ctrl-C (kill, docker stop
and systemd send SIGTERM), with Ray and Serve stood in for."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

import pytest

from pumpfleet.settings import Settings
from pumpfleet_cli import commands


def test_sigterm_shuts_serve_down_gracefully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray_jobs._ray
    from serve_apps import run as serve_run

    calls: list[str] = []
    monkeypatch.setattr(serve_run, "use_serve_env", lambda **kw: calls.append(f"env {kw}"))
    monkeypatch.setattr(ray_jobs._ray, "init_ray", lambda settings: calls.append("ray"))
    monkeypatch.setattr(serve_run, "start", lambda *a, **kw: "http://127.0.0.1:1")
    monkeypatch.setattr(serve_run, "stop", lambda: calls.append("stopped"))
    settings = Settings(home=tmp_path)
    args = argparse.Namespace(challenger_weight=0.2, port=1, host="127.0.0.1", insecure_dev=True)
    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    commands.cmd_serve(args, settings)
    assert calls == [f"env {{'home': {tmp_path!r}}}", "ray", "stopped"]
    assert signal.getsignal(signal.SIGTERM) == before
