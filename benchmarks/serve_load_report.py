"""The tables and the last line of ``benchmarks.serve_load``: each arm's requests per
second, p50 and p99 against the plain FastAPI baseline at the same concurrency, the batch
paths' windows per second, the chaos run, and the key=value line issue 18 names."""

from __future__ import annotations

import os
from typing import Any

from pumpfleet.tables import format_table

HEAD = ["arm", "clients", "req/s", "p50 ms", "p99 ms", "errors", "vs fastapi",
        "CPU us/req", "replicas us/req", "fastapi CPU / arm's"]  # fmt: skip


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _key_us(x: float | None) -> str:
    """A ``key=value`` figure a script reads: no thousands separator, ``nan`` if none."""
    return "nan" if x is None else f"{x:.0f}"


def report(
    rows: dict[str, dict[str, Any]], concurrency: list[int], door_only: bool = False
) -> None:
    if not concurrency:  # --batches-only
        batch_table(rows)
        sb = rows["serve@batch"]
        print(_load())
        print(f"json_wps={sb['json']:.0f} arrow_wps={sb['arrow']:.0f}")
        return
    base = rows[f"fastapi@{concurrency[0]}"]
    table = []
    names = {"door": "serve, front door (HAProxy)", "serve": "serve, replicas' own ports",
             "proxy": "serve, Python proxy", "fastapi": "fastapi, 2 workers"}  # fmt: skip
    for n in concurrency:
        for arm in ("door", "fastapi") if door_only else ("door", "serve", "proxy", "fastapi"):
            r = rows[f"{arm}@{n}"]
            ratio = _ratio(r["rps"], rows[f"fastapi@{n}"]["rps"])
            row = [names[arm], n, f"{r['rps']:,.0f}", f"{r['p50']:.1f}"]
            cpu = [_us(r.get("cpu_us")), _us(r.get("replica_cpu_us"))]
            plain_cpu = rows[f"fastapi@{n}"].get("cpu_us")
            cpu_ratio = _ratio(plain_cpu, r["cpu_us"]) if plain_cpu and r.get("cpu_us") else "-"
            table.append([*row, f"{r['p99']:.1f}", r["errors"], ratio, *cpu, cpu_ratio])
    if door_only:
        door_summary(rows, concurrency, table)
        return
    ip = rows["in-process"]
    row = ["onnxruntime in-process", 1, f"{ip['rps']:,.0f}", f"{ip['p50']:.2f}"]
    table.append([*row, f"{ip['p99']:.2f}", 0, _ratio(ip["rps"], base["rps"]), "", "", ""])
    print(format_table(HEAD, table))
    print()
    batch_table(rows)
    sb = rows["serve@batch"]
    ch = rows["serve@chaos"]
    print()
    print(f"chaos under load (16 clients): {'; '.join(ch['events'])}")
    kinds = ch["error_kinds"] or ""
    print(
        f"  {ch['rps']:,.0f} req/s, p99 {ch['p99']:.1f} ms, failed requests {ch['errors']} {kinds}"
    )
    print(_load())
    d16, f16 = rows[f"door@{concurrency[0]}"], rows[f"fastapi@{concurrency[0]}"]
    print(
        f"{_door_keys(rows, concurrency)} arrow_wps={sb['arrow']:.0f} "
        f"chaos_errors={ch['errors']} cpu_us={_key_us(d16.get('cpu_us'))} "
        f"fastapi_cpu_us={_key_us(f16.get('cpu_us'))}"
    )


def _load() -> str:
    return f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def _door_keys(rows: dict[str, dict[str, Any]], concurrency: list[int]) -> str:
    """The front door's p99 at the fewest clients and its ratios to FastAPI at the
    fewest and the most, as the issue's key=value pairs."""
    d16, d64 = rows[f"door@{concurrency[0]}"], rows[f"door@{concurrency[-1]}"]
    f16, f64 = rows[f"fastapi@{concurrency[0]}"], rows[f"fastapi@{concurrency[-1]}"]
    return (
        f"serve_p99_ms={d16['p99']:.1f} ratio={d16['rps'] / f16['rps']:.2f} "
        f"ratio64={d64['rps'] / f64['rps']:.2f}"
    )


def door_summary(rows: dict[str, dict[str, Any]], concurrency: list[int], table: list[Any]) -> None:
    """``--door-only``: the front door's and FastAPI's rows and their key=value line."""
    print(format_table(HEAD, table))
    print(_load())
    d16, f16 = rows[f"door@{concurrency[0]}"], rows[f"fastapi@{concurrency[0]}"]
    print(
        f"{_door_keys(rows, concurrency)} cpu_us={_key_us(d16.get('cpu_us'))} "
        f"replica_cpu_us={_key_us(d16.get('replica_cpu_us'))} "
        f"fastapi_cpu_us={_key_us(f16.get('cpu_us'))}"
    )


def batch_table(rows: dict[str, dict[str, Any]]) -> None:
    """The batch paths' windows per second against plain FastAPI's JSON, and the CPU a
    batch cost the servers (every Ray process and HAProxy for Serve)."""
    fb, sb, ip = rows["fastapi@batch"], rows["serve@batch"], rows["in-process"]
    via = "front door"

    def cpu(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    batches = [
        ["fastapi, JSON", f"{fb['json']:,.0f}", "1.00x", cpu(fb.get("json_cpu_ms")), ""],
        [f"serve, JSON ({via})", f"{sb['json']:,.0f}", _ratio(sb["json"], fb["json"]),
         cpu(sb.get("json_cpu_ms")), cpu(sb.get("json_replica_cpu_ms"))],
        [f"serve, Arrow IPC ({via})", f"{sb['arrow']:,.0f}", _ratio(sb["arrow"], fb["json"]),
         cpu(sb.get("arrow_cpu_ms")), cpu(sb.get("arrow_replica_cpu_ms"))],
        ["onnxruntime in-process", f"{ip['batch']:,.0f}", _ratio(ip["batch"], fb["json"]), "",
         ""],
    ]  # fmt: skip
    head = ["batch of 1,000", "windows/s", "vs fastapi JSON", "server CPU ms/batch",
            "replicas CPU ms/batch"]  # fmt: skip
    print(format_table(head, batches))
