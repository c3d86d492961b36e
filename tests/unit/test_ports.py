"""A port handed to a server for later lies outside the kernel's ephemeral range (where
outgoing connections take their local ports) and is free."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pumpfleet import ports


def test_a_port_is_free_and_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ports.RANGE_VAR, raising=False)  # as make test's workers set it
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
    monkeypatch.delenv(ports.RANGE_VAR, raising=False)
    monkeypatch.setattr(ports, "ephemeral_low", lambda: ports.LOW + 10)
    port = ports.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_process_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port handed out is free when drawn, not until its server binds it: the next
    draw in this process must not hand it out again."""
    monkeypatch.setattr(ports, "_given", set())
    monkeypatch.setenv(ports.RANGE_VAR, "41000-41999")
    picked = [ports.free_port() for _ in range(300)]
    assert len(set(picked)) == 300 and all(41000 <= p <= 41999 for p in picked)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("41000", "must be LOW-HIGH"),
        ("a-b", "must be LOW-HIGH"),
        ("500-2000", "within 1024-65535"),
        ("42000-41000", "got '42000-41000'"),
    ],
)
def test_a_bad_port_range_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    from pumpfleet.errors import InputError

    monkeypatch.setenv(ports.RANGE_VAR, value)
    with pytest.raises(InputError, match=f"^PUMPFLEET_PORT_RANGE .*{message}"):
        ports.free_port()


def test_the_test_workers_draw_from_ranges_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import worker_port_range

    monkeypatch.delenv(ports.RANGE_VAR, raising=False)
    low, high = ports.draw_range()
    bounds = [tuple(map(int, worker_port_range(w, 2).split("-"))) for w in (0, 1)]
    assert bounds[0][0] == low and bounds[0][1] < bounds[1][0] and bounds[1][1] < high
    for lo, hi in bounds:
        monkeypatch.setenv(ports.RANGE_VAR, f"{lo}-{hi}")
        assert all(lo <= ports.free_port() <= hi for _ in range(20))
