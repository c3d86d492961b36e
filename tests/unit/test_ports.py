"""A port handed to a server for later lies outside the kernel's ephemeral range (where
outgoing connections take their local ports) and is free."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pumpfleet import ports


def test_a_port_is_free_and_below_the_ephemeral_range() -> None:
    low = ports.ephemeral_low()
    picked = {ports.free_port() for _ in range(20)}
    for port in picked:
        assert ports.LOW <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: the server can bind it
    assert len(picked) > 1  # drawn at random, not one fixed port


def test_the_range_file_is_read_and_a_bad_one_means_linux_default(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t60999\n")
    assert ports.ephemeral_low(f) == 40000
    f.write_text("garbage")
    assert ports.ephemeral_low(f) == 32768
    assert ports.ephemeral_low(tmp_path / "missing") == 32768


def test_no_room_below_the_range_falls_back_to_the_kernels_pick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "ephemeral_low", lambda: ports.LOW + 10)
    port = ports.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
