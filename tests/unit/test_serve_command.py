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
    # a Ray of its own: the local drain (serve_apps/run.py: LOCAL_SERVE_ENV)
    assert calls == [f"env {{'local': True, 'home': {tmp_path!r}}}", "ray", "stopped"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_sigterm_while_serve_starts_or_drains_still_stops_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz answers before start() returns: a SIGTERM then stops Serve as later does,
    and one more while it drains does not cut the drain short."""
    import ray_jobs._ray
    from serve_apps import run as serve_run

    calls: list[str] = []

    def start(*a: object, **kw: object) -> str:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises before this returns
        calls.append("start returned")
        return "http://127.0.0.1:1"

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # ignored while Serve drains
        calls.append("stopped")

    monkeypatch.setattr(serve_run, "use_serve_env", lambda **kw: calls.append(f"env {kw}"))
    monkeypatch.setattr(ray_jobs._ray, "init_ray", lambda settings: None)
    monkeypatch.setattr(serve_run, "start", start)
    monkeypatch.setattr(serve_run, "stop", stop)
    settings = Settings(home=tmp_path, ray_address="ray://head:10001")
    args = argparse.Namespace(challenger_weight=0.2, port=1, host="127.0.0.1", insecure_dev=True)
    before = signal.getsignal(signal.SIGTERM)
    commands.cmd_serve(args, settings)
    # joining a cluster: Ray's own drain for the load balancers in front of it
    assert calls == [f"env {{'local': False, 'home': {tmp_path!r}}}", "stopped"]
    assert signal.getsignal(signal.SIGTERM) == before
