"""The edge agent's footprint: one `pumpfleet-edge run` process watching N pumps at one
reading per second each over MQTT (a Mosquitto broker started here on 127.0.0.1), for
N = 10, 50 and 200, against two baselines in the same run: the agent idle on the broker,
and 50 pumps read from spool files (one file a second) instead of MQTT.

Per case: the agent's resident memory (the most seen while measured), its CPU as a
share of one core (user + system time over wall time), the time from a reading's arrival
at the agent to its window stored (p50, p99: batching included), the time to score one
batch (p99), how fast the store grows per pump and day with the cloud unreachable (the
records' bytes; nothing is uploaded or thinned), and what one alert's explanation took
(p50, over the case). The model is a small CNN trained
here for a few seconds on a synthetic task; 4 % of the pumps run hot and alert, and
alerts are explained on the device as in the field. Every reading completes a window
(stride 1: a score per pump per second, the most a 1 Hz feed asks).

    python -m benchmarks.edge_agent [--pumps 10,50,200] [--seconds 15] [--warm 5]

The last line is ``rss_mb_50=<MB> cpu_pct_50=<% of one core> p99_ms_50=<ms>`` (MQTT, 50).
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pumpfleet import bundle, runtime
from pumpfleet.features import FeatureSpec, window_features
from pumpfleet.schema import CHANNEL_NAMES
from pumpfleet.tables import format_table

WINDOW = 30
MEAN = [100.0, 200.0, 80.0, 5.0, 100.0, 1000.0]
STD = [10.0, 20.0, 5.0, 1.0, 10.0, 100.0]
FAILING = 0.04  # share of pumps that run hot (and alert)
TOPIC = "site/{pump}/readings"
DEVICE = "bench"


def _spec() -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp",
        channels=list(CHANNEL_NAMES),
        window=WINDOW,
        stride=1,
        interval_seconds=1.0,
        rul_cap_hours=168.0,
        horizon_hours=48.0,
        alert_threshold=0.5,
        mean=MEAN,
        std=STD,
    )


def _readings(n: int, wear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One second of readings ``[n, C]``: noise, motor temperature and vibration up with wear."""
    z = rng.normal(0, 1, (n, len(MEAN)))
    z[:, 2:4] += 4 * wear[:, None]
    return np.asarray(MEAN) + np.asarray(STD) * z


def make_bundle(folder: Path) -> tuple[Path, str]:
    """A signed bundle of a CNN trained for a few seconds on windows whose wear shows in
    motor temperature and vibration; returns it and its public key."""
    import torch

    from pumpfleet.models import ModelConfig
    from pumpfleet.onnx_io import to_onnx
    from pumpfleet.training import Arrays, TrainConfig, fit

    torch.set_num_threads(1)
    spec, rng = _spec(), np.random.default_rng(0)

    def task(n: int) -> Arrays:
        rul = rng.uniform(0, spec.rul_cap_hours, n)
        wear = 1 - rul / spec.rul_cap_hours
        raw = np.stack([_readings(n, wear, rng) for _ in range(WINDOW)], axis=1)
        x = window_features(raw, spec)
        return Arrays(x, rul.astype(np.float32), (rul <= spec.horizon_hours).astype(np.int8))

    cfg = TrainConfig(model=ModelConfig(kind="cnn"), epochs=3)
    model, _ = fit(task(2000), task(300), spec, cfg)
    onnx = to_onnx(model, WINDOW, spec.n_channels)
    golden_raw = np.stack([_readings(16, np.linspace(0, 1, 16), rng) for _ in range(WINDOW)], 1)
    expected = runtime.onnx_runner(onnx)(window_features(golden_raw, spec))
    buf = io.BytesIO()
    np.savez(buf, raw=golden_raw, expected=np.asarray(expected, np.float32))
    key = bundle.load_or_create_key(folder / "key.pem")
    path = folder / "bench-v1.pfbundle"
    now = time.time()
    meta = {
        "pump_class": "esp",
        "model_version": "1",
        "min_agent_version": "0.2.0",
        "variants": {"fp32": {"file": "model.onnx"}},
        "golden": {"file": "golden.npz", "windows": 16},
        "release": int(now * 1000),
        "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 86400)),
    }
    members = {"model.onnx": onnx, "feature_spec.json": spec.to_json().encode()}
    bundle.write_bundle(path, members | {"golden.npz": buf.getvalue()}, meta, key)
    return path, bundle.public_key_hex(key)


class Broker:
    """mosquitto on 127.0.0.1 with a config of its own, stopped by its PID."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(binary, os.X_OK):
            raise SystemExit("benchmarks.edge_agent needs mosquitto (make system-deps)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        conf = folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"max_queued_messages 100000\nuser {getpass.getuser()}\n"
        )
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _client(port: int, name: str) -> Any:
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


class Feed:
    """N pumps at 1 Hz from ``t0`` (each pump at its own phase within the second), over
    MQTT or as one spool file a second, until stopped."""

    def __init__(self, n: int, t0: int, publish: Any) -> None:
        self.n, self.t0, self.publish = n, t0, publish
        self.wear = np.where(np.arange(n) < max(1, round(FAILING * n)), 0.9, 0.05)
        self.rng = np.random.default_rng(n)
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def rows(self, second: int) -> list[dict[str, Any]]:
        values = _readings(self.n, self.wear, self.rng).round(3)
        return [
            {
                "pump_id": f"p{i:03d}",
                "timestamp": self.t0 + second,
                **dict(zip(CHANNEL_NAMES, v, strict=True)),
            }
            for i, v in enumerate(values.tolist())
        ]

    def _run(self) -> None:
        start, second = time.monotonic(), WINDOW - 1
        while not self.stop.is_set():
            self.publish(self.rows(second), start + (second - WINDOW + 1))
            self.sent += self.n
            second += 1
            self.stop.wait(max(0.0, start + (second - WINDOW + 1) - time.monotonic()))


def _spool_write(spool: Path, rows: list[dict[str, Any]], name: str) -> None:
    tmp = spool / f".{name}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.rename(spool / f"{name}.jsonl")


def _proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, resident MB) of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss


def _buffered(state: Path) -> tuple[int, int]:
    """(rows, bytes) of the records the agent's store holds."""
    from edge_agent.store import Store

    store = Store(state / "store.db", readonly=True)
    try:
        found = store.buffered()
        return found["rows"], found["bytes"]
    finally:
        store.close()


def _explain_ms(state: Path) -> list[float]:
    """How long each stored explanation took (milliseconds)."""
    from edge_agent.store import Store

    store = Store(state / "store.db", readonly=True)
    try:
        rows = store.db.execute("SELECT payload FROM outbox WHERE alert = 1").fetchall()
    finally:
        store.close()
    found = (json.loads(r[0]).get("explanation") for r in rows)
    return [float(e["ms"]) for e in found if e]


def run_case(
    kind: str, n: int, work: Path, bundle_path: Path, public: str, broker: Broker, args: Any
) -> dict[str, Any]:
    """One agent process for one case (``idle``, ``mqtt`` or ``spool``); its figures."""
    state = work / f"{kind}-{n}"
    spool = state / "spool"
    spool.mkdir(parents=True)
    t0 = int(time.time()) - 3600
    device = f"{DEVICE}-{kind}-{n}"  # a session of its own on the broker
    cfg = {
        "device_id": device,
        "state_dir": str(state),
        "public_key": public,
        "initial_bundle": str(bundle_path),
        "quota_mb": 4096,
        "heartbeat_seconds": 5.0,
        "mqtt": {"port": broker.port, "topics": ["site/+/readings"]},
    }
    (state / "agent.json").write_text(json.dumps(cfg))
    feed = Feed(n, t0, None)
    if n:  # the first window - 1 readings of each pump, so windows form from the start
        _spool_write(spool, [r for s in range(WINDOW - 1) for r in feed.rows(s)], "prefill")
    health: dict[str, Any] = {}
    online = threading.Event()

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        if m.topic.endswith("/status"):
            if m.payload == b"online":
                online.set()
        else:
            health.update(json.loads(m.payload))

    watch = _client(broker.port, f"watch-{kind}-{n}")
    watch.on_message = on_message
    watch.subscribe([(f"pumpfleet/{device}/health", 1), (f"pumpfleet/{device}/status", 1)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(state / "agent.json")],
        stdout=subprocess.DEVNULL,
        stderr=(state / "agent.log").open("w"),
    )
    gateway = _client(broker.port, f"gateway-{kind}-{n}")
    try:
        while not online.is_set():  # subscribed: what is published now reaches it
            if proc.poll() is not None:
                raise SystemExit(f"the agent exited: {(state / 'agent.log').read_text()[-500:]}")
            time.sleep(0.1)
        if kind == "mqtt":

            def publish(rows: list[dict[str, Any]], due: float) -> None:
                for i, r in enumerate(rows):  # spread over the second
                    time.sleep(max(0.0, due + i / len(rows) - time.monotonic()))
                    gateway.publish(TOPIC.format(pump=r["pump_id"]), json.dumps(r), qos=1)

            feed.publish = publish
        else:
            feed.publish = lambda rows, due: _spool_write(spool, rows, f"r{time.monotonic_ns()}")
        if n:
            feed.thread.start()
        time.sleep(args.warm)
        cpu0, _ = _proc_sample(proc.pid)
        (rows0, bytes0), wall0, rss = _buffered(state), time.monotonic(), 0.0
        while time.monotonic() - wall0 < args.seconds:
            time.sleep(0.5)
            rss = max(rss, _proc_sample(proc.pid)[1])
        cpu1, _ = _proc_sample(proc.pid)
        wall = time.monotonic() - wall0
        rows1, bytes1 = _buffered(state)
        stats = dict(health.get("mqtt") or {})
    finally:
        feed.stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        watch.loop_stop()
        gateway.loop_stop()
    lat = stats.get("reading_to_stored_ms") or {}
    explained = _explain_ms(state) if n else []
    return {
        "case": f"{kind} {n} pumps" if n else "idle on MQTT",
        "rss_mb": round(rss, 1),
        "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "p50_ms": lat.get("p50") if kind == "mqtt" else None,
        "p99_ms": lat.get("p99") if kind == "mqtt" else None,
        "batch_p99_ms": (stats.get("batch_ms") or {}).get("p99") if kind == "mqtt" else None,
        "windows_per_s": round((rows1 - rows0) / wall, 1) if n else None,
        "store_mb_pump_day": round((bytes1 - bytes0) / n / wall * 86400 / 1e6, 1) if n else None,
        "explain_ms_p50": round(float(np.median(explained)), 1) if explained else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_agent", description=__doc__)
    parser.add_argument("--pumps", default="10,50,200")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured, per case")
    parser.add_argument("--warm", type=float, default=5.0, help="before measuring, per case")
    args = parser.parse_args(argv)
    pumps = [int(x) for x in args.pumps.split(",")]
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pumpfleet-edge-agent-bench-") as tmp:
        work = Path(tmp)
        bundle_path, public = make_bundle(work)
        broker = Broker(work)
        try:
            cases = [("idle", 0), ("spool", 50), *(("mqtt", n) for n in pumps)]
            rows = [run_case(k, n, work, bundle_path, public, broker, args) for k, n in cases]
        finally:
            broker.stop()
    load1 = os.getloadavg()
    print(
        f"edge agent, 1 process, cnn window {WINDOW} x {len(CHANNEL_NAMES)}, stride 1, "
        f"1 reading/s per pump ({FAILING:.0%} of pumps alerting, explained), cloud "
        f"unreachable; {args.warm:g} s warm-up, {args.seconds:g} s measured per case; "
        f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} CPUs)"
    )
    headers = list(rows[0])
    print(format_table(headers, [[r[h] for h in headers] for r in rows]))
    at50 = next((r for r in rows if r["case"] == "mqtt 50 pumps"), None)
    if at50 is not None:
        print(f"rss_mb_50={at50['rss_mb']} cpu_pct_50={at50['cpu_pct']} p99_ms_50={at50['p99_ms']}")


if __name__ == "__main__":
    main()
