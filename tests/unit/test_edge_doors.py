"""The device's doors (issue 16): no spool file, line or step can stop the agent; what it
cannot use is set aside with a reason and counted, and the rest is scored."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from tests.unit.edge_support import EdgeWorkspace, agent_config, shared_workspace, write_readings

W = 12


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory) -> EdgeWorkspace:
    return shared_workspace(tmp_path_factory.getbasetemp())


def run_until_idle(agent: Agent) -> None:
    agent.run(threading.Event(), exit_when_idle=True)


def test_a_file_no_reader_takes_goes_to_bad_and_never_stops_the_agent_again(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", None, spool_max_file_mb=1.0)
    spool = cfg.spool
    write_readings(spool, "r000", ["p1"], 0, 15)
    # A field past the csv module's limit (a 50 MB one crashed the agent at every restart).
    (spool / "r001.csv").write_text("pump_id,timestamp,motor_temp\np1,0," + "9" * 200_000 + "\n")
    (spool / "r002.jsonl").write_bytes(b"x" * (2 * 2**20))  # over the spool's 1 MB limit
    (spool / "r003.jsonl").write_bytes(b"\xff\xfe not utf-8")
    write_readings(spool, "r004", ["p1"], 15, 5, fmt="jsonl")
    agent = Agent(cfg)
    run_until_idle(agent)
    bad = spool / "bad"
    reasons = {p.name: (bad / f"{p.name}.reason").read_text().strip() for p in bad.glob("r00*")
               if not p.name.endswith(".reason")}  # fmt: skip
    assert reasons == {
        "r001.csv": "not readable as CSV: field larger than field limit (131072)",
        "r002.jsonl": f"{2 * 2**20} bytes, over the spool's limit of {2**20}",
        "r003.jsonl": "not UTF-8 text",
    }
    assert sorted(p.name for p in (spool / "done").iterdir()) == ["r000.csv", "r004.jsonl"]
    c = agent.store.counters()
    assert c["bad_files"] == 3 and c["scored"] == 20 - W + 1
    agent.store.close()
    run_until_idle(Agent(cfg))  # a restart finds nothing left to choke on


def test_lines_no_door_takes_are_set_aside_and_the_rest_scored(
    ws: EdgeWorkspace, tmp_path: Path
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", None)
    header = "pump_id,timestamp,motor_temp,flow,vibration,colour"
    rows = [f"p1,{1_780_000_000 + 3600 * h},70.5,100,1.1,red" for h in range(14)]
    rows.insert(3, "p1,1780000000,9999,100,1.1,red")  # 9,999 degC: a sensor fault
    rows.insert(5, "p1,1780019800,70,100")  # fewer fields (half past hour 5): missing, kept
    rows.insert(7, "p1,1780010800,70,100,1.1,red,extra")  # more fields than the header
    rows.insert(9, f"{'y' * 300},1780010800,70,100,1.1,red")  # a pump id past 128
    cfg.spool.mkdir(parents=True)
    (cfg.spool / "r000.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    agent = Agent(cfg)
    run_until_idle(agent)
    rejected = [
        json.loads(line)
        for line in (cfg.spool / "bad" / "r000.csv.rejected.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["reason"][:40]) for r in rejected] == [
        (5, "motor_temp: 9999 is outside its physical"),
        (9, "more fields than the header"),
        (11, "pump_id: 1 to 128 printable characters, "),
    ]
    c = agent.store.counters()
    # 15 rows kept (14 good, one with two readings missing): windows from the 12th on.
    assert c["rows_set_aside"] == 3 and c["scored"] == 15 - W + 1
    assert c["unknown_columns"] == 1 and c["missing_columns"] == 0
    assert (cfg.spool / "done" / "r000.csv").exists()


def test_a_failing_step_is_logged_counted_and_the_loop_goes_on(
    ws: EdgeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = agent_config(ws, tmp_path / "agent", None)
    agent = Agent(cfg)
    write_readings(cfg.spool, "r000", ["p1"], 0, 15)
    real = agent.process_spool
    calls = {"n": 0}

    def flaky(max_files: int = 50) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real(max_files)

    monkeypatch.setattr(agent, "process_spool", flaky)
    run_until_idle(agent)
    c = agent.store.counters()
    assert calls["n"] >= 2 and c["step_errors"] == 1 and c["scored"] == 15 - W + 1


def test_a_window_with_too_few_readings_is_not_scored(ws: EdgeWorkspace, tmp_path: Path) -> None:
    """An all-missing window scored as the training mean (RUL 166.7 h) before."""
    cfg = agent_config(ws, tmp_path / "agent", None)
    cfg.spool.mkdir(parents=True)
    rows = [f"p1,{1_780_000_000 + 3600 * h},,," for h in range(12)]  # readings all missing
    rows += [f"p1,{1_780_000_000 + 3600 * h},70,100,1.1" for h in range(12, 30)]
    header = "pump_id,timestamp,motor_temp,flow,vibration"
    (cfg.spool / "r000.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    agent = Agent(cfg)
    run_until_idle(agent)
    c = agent.store.counters()
    # Windows end at rows 12..30; those with at least half their readings present count.
    assert c["windows_set_aside"] == 6 and c["scored"] == 30 - W + 1 - 6
