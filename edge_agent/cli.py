"""``pumpfleet-edge``: the agent's command.

    pumpfleet-edge run --config agent.yaml [--stdin] [--exit-when-idle]
    pumpfleet-edge profile --config agent.yaml [--repeats N]
    pumpfleet-edge status --config agent.yaml

Bad input or a failed step: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from edge_agent import __version__
from edge_agent.config import AgentConfig, load_config
from pumpfleet.errors import InputError, PumpfleetError

log = logging.getLogger("edge_agent")

STDIN_BATCH = 200


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _stdin_reader(q: queue.Queue[str | None]) -> None:
    for line in sys.stdin:
        q.put(line)
    q.put(None)


def _drain_stdin(agent: Any, q: queue.Queue[str | None]) -> bool:
    """Score what has arrived on stdin; False at end of input."""
    from edge_agent.source import Parsed, parse_line

    lines: list[str] = []
    open_ = True
    while len(lines) < STDIN_BATCH:
        try:
            item = q.get(timeout=0.2 if not lines else 0.01)
        except queue.Empty:
            break
        if item is None:
            open_ = False
            break
        if item.strip():
            lines.append(item)
    if lines and agent.active is not None:
        parsed = Parsed()
        for i, line in enumerate(lines, 1):
            parse_line(line, i, agent.active.spec, parsed)
        agent.accept(parsed)
    return open_


def cmd_run(cfg: AgentConfig, args: argparse.Namespace) -> None:
    from edge_agent.agent import Agent

    agent = Agent(cfg)
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()
        agent.wake.set()

    signal.signal(signal.SIGTERM, _stop)
    log.info(
        "agent %s on %s: model %s; spool %s%s",
        __version__,
        cfg.device_id,
        f"v{agent.active.version} ({agent.active.variant})" if agent.active else "none",
        cfg.spool,
        f"; mqtt {cfg.mqtt.host}:{cfg.mqtt.port} {cfg.mqtt.topics}" if cfg.mqtt else "",
    )
    try:
        if args.stdin:
            q: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
            threading.Thread(target=_stdin_reader, args=(q,), daemon=True).start()
            open_ = True
            while not stop.is_set() and open_:
                open_ = _drain_stdin(agent, q)
                agent.step()
        agent.run(stop, exit_when_idle=args.exit_when_idle)
    finally:
        agent.close()


def cmd_profile(cfg: AgentConfig, args: argparse.Namespace) -> None:
    from edge_agent.agent import PROFILE_FILE, Agent
    from edge_agent.profile import profile

    agent = Agent(cfg)
    if agent.active is None:
        raise InputError("no bundle installed: put one in the updates folder and run first")
    report = profile(
        agent.active.bundle,
        lambda b, v: agent.scorer(b, v),
        cfg.state_dir / PROFILE_FILE,
        args.repeats,
    )
    health = f", health model v{report['anomaly_version']}" if report["anomaly_version"] else ""
    print(f"bundle v{report['bundle_version']}{health}, {report['windows']} golden windows")
    for name, r in report["variants"].items():
        flags = "" if r["within_accuracy"] else "  (over the accuracy limit)"
        flags += "" if r["self_test"] else "  (self-test failed)"
        line = f"  {name:8s} p50 {r['p50_us']:8.1f} us  p99 {r['p99_us']:8.1f} us"
        if h := r["health"]:
            # The health model variant this RUL variant runs with, timed on its own.
            line += f"  + health {h['variant']:4s} p50 {h['p50_us']:8.1f} us"
            line += f"  p99 {h['p99_us']:8.1f} us"
        print(line + flags)
    if report["variant"] is None:
        raise InputError("no variant is within the accuracy limit and passes its self-test")
    print(f"chosen: {report['variant']} (written to {cfg.state_dir / PROFILE_FILE})")


def cmd_status(cfg: AgentConfig, args: argparse.Namespace) -> None:
    from edge_agent.store import Store
    from edge_agent.trust import TrustStore
    from edge_agent.updates import BundleDir
    from pumpfleet.bundle import BundleId

    db = cfg.state_dir / "store.db"
    if not db.exists():
        raise InputError(f"no agent state under {cfg.state_dir}: run the agent first")
    store = Store(db, readonly=True)
    state = BundleDir(cfg.state_dir / "bundles").state()
    trusted = TrustStore(cfg.state_dir, cfg.trust_anchor()).status()
    print(
        json.dumps(
            {
                "device_id": cfg.device_id,
                "agent_version": __version__,
                # The bundle's id (v<N>[-anomaly-v<M>]); an agent from before health-model
                # updates installed every bundle as v<N>, whatever its health model.
                "bundle": state.current,
                "model_version": BundleId.parse(state.current).rul if state.current else None,
                "previous_bundle": state.previous,
                "bad_bundles": state.bad,
                "on_probation": state.probation is not None,
                "buffered": store.buffered(),
                "counters": store.counters(),
                "trust": trusted,
            },
            indent=2,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pumpfleet-edge", description="The pumpfleet edge agent.")
    p.add_argument("--version", action="version", version=f"pumpfleet-edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("run", help="score, buffer, upload and take updates until stopped")
    s.add_argument("--config", type=Path, required=True, help="agent YAML or JSON")
    s.add_argument("--stdin", action="store_true", help="read JSON-line readings from stdin")
    s.add_argument("--exit-when-idle", action="store_true", help="stop when all is done")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("profile", help="time each model variant here; pick the fastest")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--repeats", type=int, default=20)
    s.set_defaults(func=cmd_profile)
    s = sub.add_parser("status", help="model version, buffer and counters")
    s.add_argument("--config", type=Path, required=True)
    s.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        cfg = load_config(args.config)
        args.func(cfg, args)
    except (PumpfleetError, OSError, ValueError) as e:
        print(f"pumpfleet-edge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
