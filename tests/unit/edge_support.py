"""A small real workspace for the edge tests: a hand-written feature snapshot, a model
trained on it for a few epochs, registered in MLflow on SQLite as champion, and exported
into signed bundles by the real export; and one whose class also has an anomaly (health)
champion. No Ray."""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pumpfleet.features import FeatureSpec
from pumpfleet.registry import CHAMPION, Registry, anomaly_model_name, model_name
from pumpfleet.settings import Settings
from tests.conftest import serve_in_background

CLS = "esp"
W = 12
CHANNELS = ["motor_temp", "flow", "vibration"]
CAP = 100.0
SPEC = FeatureSpec(
    pump_class=CLS,
    channels=CHANNELS,
    window=W,
    stride=1,
    interval_seconds=3600,
    rul_cap_hours=CAP,
    horizon_hours=20,
    alert_threshold=0.5,
    mean=[70.0, 100.0, 1.0],
    std=[5.0, 10.0, 0.5],
)


if TYPE_CHECKING:
    from pumpfleet.manifest import BundleManifest


def raw_windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows ``[n, W, 3]`` whose motor temperature rises as the RUL falls."""
    rng = np.random.default_rng(seed)
    rul = rng.uniform(0, CAP, n)
    raw = np.empty((n, W, len(CHANNELS)))
    raw[..., 0] = 70 + (1 - rul[:, None] / CAP) * 15 + rng.normal(0, 1, (n, W))
    raw[..., 1] = 100 + rng.normal(0, 10, (n, W))
    raw[..., 2] = 1 + (1 - rul[:, None] / CAP) + rng.normal(0, 0.2, (n, W))
    return raw, rul


def write_snapshot(features: Path, snapshot: str = "snap1") -> None:
    rows: list[dict[str, Any]] = []
    flats = []
    for split, n, seed in [("train", 600, 0), ("val", 100, 1), ("holdout", 300, 2)]:
        raw, rul = raw_windows(n, seed)
        for i in range(n):
            rows.append(
                {
                    "pump_id": f"{CLS}-{split}-{i % 3}",
                    "site": "s1",
                    "split": split,
                    "end_time": 1_700_000_000_000 + i * 3_600_000,
                    "rul_hours": rul[i],
                    "failure_within_horizon": int(rul[i] <= SPEC.horizon_hours),
                }
            )
        flats.append(raw.reshape(n, -1).astype(np.float32))
    flat = np.concatenate(flats).reshape(-1)
    table = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                ("pump_id", pa.string()),
                ("site", pa.string()),
                ("split", pa.string()),
                ("end_time", pa.timestamp("ms", tz="UTC")),
                ("rul_hours", pa.float32()),
                ("failure_within_horizon", pa.int8()),
            ]
        )
    )
    table = table.append_column(
        "window", pa.FixedSizeListArray.from_arrays(pa.array(flat), W * len(CHANNELS))
    )
    part = features / snapshot / "windows" / f"pump_class={CLS}"
    part.mkdir(parents=True)
    pq.write_table(table, part / "part-0.parquet")
    manifest = {"specs": {CLS: SPEC.model_dump(mode="json")}, "channels": CHANNELS}
    (features / snapshot / "manifest.json").write_text(json.dumps(manifest))
    (features / "LATEST").write_text(snapshot)


def train_model(seed: int, epochs: int = 20) -> Any:
    import torch

    from pumpfleet.features import window_features
    from pumpfleet.models import ModelConfig
    from pumpfleet.training import Arrays, TrainConfig, fit

    torch.set_num_threads(1)

    def arrays(n: int, s: int) -> Arrays:
        raw, rul = raw_windows(n, s)
        return Arrays(
            x=window_features(raw, SPEC),
            rul=rul.astype(np.float32),
            failure=(rul <= SPEC.horizon_hours).astype(np.int8),
        )

    cfg = TrainConfig(model=ModelConfig(kind="cnn", hidden=16), epochs=epochs, seed=seed)
    model, _ = fit(arrays(600, 0), arrays(100, 1), SPEC, cfg)
    return model, cfg.model.model_dump()


def register_champion(reg: Registry, model: Any, model_config: dict[str, Any]) -> str:
    from pumpfleet.onnx_io import to_onnx

    run_id = reg.start_run("pumpfleet-train", "edge-test")
    uri = reg.log_model(
        run_id, to_onnx(model, W, len(CHANNELS)), SPEC, model.state_dict(), model_config
    )
    reg.end_run(run_id)
    version = reg.register(uri, model_name(CLS), tags={"feature_snapshot": "snap1"})
    reg.set_alias(model_name(CLS), CHAMPION, version)
    return version


@dataclass(frozen=True)
class EdgeWorkspace:
    settings: Settings
    registry: Registry
    public_key: str
    bundles: dict[str, Path]  # by model version
    exports: dict[str, dict[str, Any]]


def make_workspace(home: Path, versions: int = 2) -> EdgeWorkspace:
    """A workspace with ``versions`` champions exported in turn (v1, v2, ...)."""
    from edge_export.export import run_export

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = Settings(home=home)
    write_snapshot(settings.features_dir)
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    bundles: dict[str, Path] = {}
    exports: dict[str, dict[str, Any]] = {}
    public = ""
    for seed in range(versions):
        model, cfg = train_model(seed)
        version = register_champion(reg, model, cfg)
        out = run_export(settings)
        public = out["public_key"]
        exports[version] = out["bundles"][CLS]
        bundles[version] = Path(out["bundles"][CLS]["bundle"])
    return EdgeWorkspace(settings, reg, public, bundles, exports)


_BUILT: dict[int, EdgeWorkspace] = {}


# --- a class with a health (anomaly) model ------------------------------------------------

NORMAL_RUL = 70.0  # windows this far from failure are normal operation (cool and steady)
# The anomaly model standardises with statistics of its own (as one trained on another
# snapshot would): the device must use its spec, not the RUL model's.
ANOMALY_SPEC = SPEC.model_copy(update={"mean": [71.0, 101.0, 1.1], "std": [4.0, 10.0, 0.4]})


def normal_windows(n: int, seed: int) -> np.ndarray:
    """Raw windows ``[n, W, 3]`` of normal operation."""
    raw, rul = raw_windows(3 * n, seed)
    return raw[rul >= NORMAL_RUL][:n]


def train_anomaly(seed: int = 0) -> tuple[Any, dict[str, Any], Any]:
    """A small conv-AE on normal windows and its health spec (target FAR 5 %), as
    ``ray_jobs.train_anomaly`` makes them: (model, its AnomalyConfig dump, HealthSpec)."""
    import torch

    from pumpfleet.anomaly import AnomalyConfig, fit_autoencoder, window_errors
    from pumpfleet.features import window_features
    from pumpfleet.health import calibrate

    torch.set_num_threads(1)
    train = window_features(normal_windows(500, 20 + seed), ANOMALY_SPEC)
    held = window_features(normal_windows(200, 40 + seed), ANOMALY_SPEC)
    cfg = AnomalyConfig(hidden=8, latent=2, epochs=5, seed=seed)
    model, _ = fit_autoencoder(train, None, cfg)
    health = calibrate(window_errors(model, held), "conv_ae", target_far=0.05)
    return model, cfg.model_dump(), health


def register_anomaly_champion(reg: Registry, model: Any, cfg: dict[str, Any], health: Any) -> str:
    """Registered as ``ray_jobs.train_anomaly`` does, made champion by hand."""
    from pumpfleet.onnx_io import to_onnx

    run_id = reg.start_run("pumpfleet-train", "edge-test-anomaly")
    config = {
        "kind": "anomaly",
        "model_kind": "conv_ae",
        "anomaly_config": cfg,
        "health": health.model_dump(),
    }
    onnx_bytes = to_onnx(model, W, len(CHANNELS))
    uri = reg.log_model(run_id, onnx_bytes, ANOMALY_SPEC, model.state_dict(), config)
    reg.end_run(run_id)
    name = anomaly_model_name(CLS)
    version = reg.register(uri, name, tags={"feature_snapshot": "snap1"})
    reg.set_alias(name, CHAMPION, version)
    return version


@dataclass(frozen=True)
class HealthWorkspace(EdgeWorkspace):
    """v1 exported before the class had an anomaly model; v2 with anomaly champion v1."""

    anomaly: Any  # the torch model registered as the anomaly champion
    health: Any  # its HealthSpec


def make_health_workspace(home: Path) -> HealthWorkspace:
    from edge_export.export import run_export

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = Settings(home=home)
    write_snapshot(settings.features_dir)
    reg = Registry(settings.tracking_uri, settings.artifact_root)
    bundles: dict[str, Path] = {}
    exports: dict[str, dict[str, Any]] = {}
    ae = health = None
    out: dict[str, Any] = {}
    for seed in range(2):
        if seed == 1:
            ae, cfg, health = train_anomaly()
            register_anomaly_champion(reg, ae, cfg, health)
        version = register_champion(reg, *train_model(seed, epochs=3))
        out = run_export(settings)
        exports[version] = out["bundles"][CLS]
        bundles[version] = Path(out["bundles"][CLS]["bundle"])
    return HealthWorkspace(settings, reg, out["public_key"], bundles, exports, ae, health)


_HEALTH_BUILT: dict[str, HealthWorkspace] = {}


def shared_health_workspace(base: Path) -> HealthWorkspace:
    """One per test session, like :func:`shared_workspace`."""
    if "ws" not in _HEALTH_BUILT:
        _HEALTH_BUILT["ws"] = make_health_workspace(base / "edge-health-ws")
    return _HEALTH_BUILT["ws"]


def shared_workspace(base: Path, versions: int = 2) -> EdgeWorkspace:
    """One workspace per test session (building one takes seconds): tests read it and
    copy a bundle before changing it."""
    if versions not in _BUILT:
        _BUILT[versions] = make_workspace(base / f"edge-ws-{versions}", versions)
    return _BUILT[versions]


# --- the agent's world: a cloud that stores uploads, and a pump controller --------------


# The device token of the agents here, as `pumpfleet edge device issue --device rig-7`
# would give one (pfd.<device>.<secret>): a device uploads with its own token.
DEVICE = "rig-7"
DEVICE_TOKEN = f"pfd.{DEVICE}.edge-test-secret-0123456789"


class Cloud:
    """A real HTTP server on loopback whose upload route does what the service's does:
    the device token checked against a device book (:mod:`pumpfleet.devices`; the
    device may upload only as itself), then the real storage function
    (``pumpfleet.edge_ingest.handle_upload``; a replayed batch key with other records is
    a 409). It can be switched off (503) to play a lost connection, and counts what it
    was sent."""

    def __init__(self, root: Path, token: str = DEVICE_TOKEN) -> None:
        import hashlib
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from pumpfleet.devices import DeviceBook, DeviceEntry, Verifier
        from pumpfleet.edge_ingest import handle_upload
        from pumpfleet.errors import ConflictError, InputError

        device = token.split(".")[1]
        entry = DeviceEntry(sha256=hashlib.sha256(token.encode()).hexdigest(), issued="now")
        verifier = Verifier(DeviceBook(devices={device: entry}))
        self.root = root
        self.online = True
        self.posts = 0
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                cloud.posts += 1
                if not cloud.online:
                    return self._answer(503, {"detail": "offline"})
                if self.path != "/v1/edge/upload":
                    return self._answer(404, {"detail": "no route"})
                who = verifier.device_of(self.headers.get("X-API-Key"))
                if who is None:
                    return self._answer(401, {"detail": "bad key"})
                upload = json.loads(body)
                if upload.get("device_id") != who:
                    return self._answer(403, {"detail": f"this token is device {who}'s"})
                try:
                    return self._answer(200, handle_upload(cloud.root, upload))
                except InputError as e:
                    return self._answer(422, {"detail": str(e)})
                except ConflictError as e:
                    return self._answer(409, {"detail": str(e)})

            def _answer(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent was killed before it read the answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = serve_in_background(self.server)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def rows(self) -> Any:
        """Every stored edge row (a pyarrow table; empty if none)."""
        import pyarrow as pa

        files = sorted((self.root / "edge").rglob("*.parquet"))
        if not files:
            return pa.table({"request_id": pa.array([], pa.string())})
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def write_readings(
    spool: Path,
    name: str,
    pumps: list[str],
    start: int,
    n: int,
    failing: bool = False,
    fmt: str = "csv",
    flow_dropout: bool = False,
    wear: float | None = None,
) -> list[tuple[str, int]]:
    """A controller file of ``n`` hourly readings per pump from hour ``start`` (written
    under a dot-name, then renamed); returns each reading's (pump, epoch seconds).
    ``failing`` pumps run hot and shaky (near failure); ``wear`` (0..1) sets how hot and
    shaky in between."""
    t0 = 1_780_000_000
    lines, keys = [], []
    for pump in pumps:
        for h in range(start, start + n):
            # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED),
            # which made the readings, and the model's calls on them, differ run to run
            rng = np.random.default_rng(zlib.crc32(f"{pump}:{h}".encode()))
            worn = wear if wear is not None else 1.0 if failing else 0.1
            row = {
                "pump_id": pump,
                "timestamp": t0 + 3600 * h,
                "motor_temp": round(70 + 15 * worn + rng.normal(0, 1), 3),
                "flow": 0.0 if flow_dropout else round(100 + rng.normal(0, 10), 3),
                "vibration": round(1 + worn + rng.normal(0, 0.2), 3),
            }
            lines.append(row)
            keys.append((pump, t0 + 3600 * h))
    spool.mkdir(parents=True, exist_ok=True)
    tmp = spool / f".{name}.tmp"
    if fmt == "csv":
        header = "pump_id,timestamp,motor_temp,flow,vibration"
        body = "\n".join(",".join(str(r[k]) for k in header.split(",")) for r in lines)
        tmp.write_text(header + "\n" + body + "\n")
    else:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in lines))
    tmp.rename(spool / f"{name}.{fmt}")
    return keys


def agent_config(ws: EdgeWorkspace, state: Path, endpoint: str | None, **kw: Any) -> Any:
    from edge_agent.config import AgentConfig

    settings: dict[str, Any] = {
        "device_id": DEVICE,
        "state_dir": state,
        "public_key": ws.public_key,
        "initial_bundle": ws.bundles["1"],
        "endpoint": endpoint,
        "api_key": DEVICE_TOKEN,  # its own device token
        "upload_batch": 25,
        "poll_seconds": 0.05,
        "backoff_seconds": 0.05,
        "backoff_max_seconds": 0.2,
    }
    return AgentConfig(**(settings | kw))


# --- bundles a device must refuse or roll back --------------------------------------------


def bundle_with(
    ws: EdgeWorkspace,
    tmp: Path,
    version: str,
    other_key: bool = False,
    members: dict[str, bytes] | None = None,
    meta: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """The v2 bundle re-signed as ``version`` with some members or manifest fields
    changed, by the workspace's key or (``other_key``) by a stranger's; written as
    ``offers/<name>.pfbundle`` where ``name`` is given."""
    from edge_export.export import signing_key_path
    from pumpfleet import bundle

    src = bundle.read_bundle(ws.bundles["2"], ws.public_key)
    key_path = tmp / "stranger.pem" if other_key else signing_key_path(ws.settings)
    key = bundle.load_or_create_key(key_path)
    manifest = {
        k: v
        for k, v in src.manifest.to_json_object().items()
        if k not in ("members", "format", "created")
    }
    manifest |= {"model_version": version, **(meta or {})}
    stem = name or f"v{version}-{'stranger' if other_key else 'ours'}-{len(members or {})}"
    out = tmp / "offers" / f"{stem}.pfbundle"
    bundle.write_bundle(out, {**src.members, **(members or {})}, manifest, key)
    return out


def health_update(
    ws: EdgeWorkspace, tmp: Path, anomaly: str, margin: float = 1.0, golden_scale: float = 1.0
) -> Path:
    """The health workspace's v2 bundle (RUL v2, health model v1) re-signed with the same
    RUL model and health model v``anomaly``: its health spec's ``margin`` set (another
    threshold, so other health scores of the same windows), and its golden anomaly errors
    times ``golden_scale`` (other than 1: the health model fails its self-test)."""
    import io

    from pumpfleet import bundle
    from pumpfleet.health import HEALTH_FILE, HealthSpec

    src = bundle.read_bundle(ws.bundles["2"], ws.public_key)
    health = HealthSpec.from_json(src.members[HEALTH_FILE]).model_copy(update={"margin": margin})
    g = np.load(io.BytesIO(src.members["golden.npz"]))
    buf = io.BytesIO()
    np.savez(
        buf, raw=g["raw"], expected=g["expected"], anomaly_errors=g["anomaly_errors"] * golden_scale
    )
    anomaly_meta = src.manifest.to_json_object()["anomaly"] | {
        "version": anomaly,
        "margin": margin,
        "threshold": health.threshold,
    }
    return bundle_with(
        ws,
        tmp,
        "2",
        members={HEALTH_FILE: health.to_json().encode(), "golden.npz": buf.getvalue()},
        meta={"anomaly": anomaly_meta},
        name=f"pumpfleet-esp-v2-anomaly-v{anomaly}-x{golden_scale}",
    )


def tampered(ws: EdgeWorkspace, tmp: Path) -> Path:
    """A genuine bundle (v3) with one member changed after signing."""
    import io
    import tarfile

    path = bundle_with(ws, tmp, version="3")
    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    spec = json.loads(files["feature_spec.json"])
    files["feature_spec.json"] = json.dumps({**spec, "alert_threshold": 0.99}).encode()
    out = tmp / "offers" / "tampered.pfbundle"
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def wrong_golden(ws: EdgeWorkspace, tmp: Path, version: str) -> Path:
    """Signed and intact, but its model does not give the golden outputs."""
    import io

    src = bundle_with(ws, tmp, version="4")
    from pumpfleet import bundle

    b = bundle.read_bundle(src, ws.public_key)
    g = np.load(io.BytesIO(b.members["golden.npz"]))
    buf = io.BytesIO()
    np.savez(buf, raw=g["raw"], expected=g["expected"] + 0.25)
    return bundle_with(ws, tmp, version, members={"golden.npz": buf.getvalue()})


def nan_on_low_flow(ws: EdgeWorkspace, tmp: Path, version: str) -> Path:
    """Signed, intact and passing its golden self-test, but its model gives NaN for any
    window with a reading more than 5 std below the mean (a flow dropout), which the
    golden windows do not hold: only scoring after the switch shows it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pumpfleet import bundle

    b = bundle.read_bundle(ws.bundles["2"], ws.public_key)
    model = onnx.load_from_string(b.members["model.onnx"])
    g = model.graph
    for node in g.node:
        node.output[:] = ["scores_raw" if o == "scores" else o for o in node.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(5.0, np.float32), "five"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("ReduceMin", ["window"], ["low"], axes=[1, 2], keepdims=0),
            helper.make_node("Add", ["low", "five"], ["margin"]),
            helper.make_node("Sqrt", ["margin"], ["root"]),  # NaN below -5
            helper.make_node("Mul", ["root", "zero"], ["nan_or_zero"]),
            helper.make_node("Unsqueeze", ["nan_or_zero", "axis1"], ["col"]),
            helper.make_node("Add", ["scores_raw", "col"], ["scores"]),
        ]
    )
    del g.value_info[:]
    onnx.checker.check_model(model)
    only_fp32 = {"fp32": b.manifest.to_json_object()["variants"]["fp32"]}
    _ = TensorProto
    return bundle_with(
        ws,
        tmp,
        version,
        members={"model.onnx": model.SerializeToString()},
        meta={"variants": only_fp32},
    )


def manifest(model_version: int | str, anomaly: int | None = None, **fields: Any) -> BundleManifest:
    """A bundle manifest for decision tests: class esp, the given RUL and health model
    versions and other ``fields``, member hashes made up."""
    from pumpfleet.manifest import ANOMALY_FEATURE_SPEC, HEALTH_SPEC, BundleManifest

    names = ["model.onnx", "feature_spec.json"]
    found: dict[str, Any] = {}
    if anomaly is not None:
        found["anomaly"] = {"version": str(anomaly), "variants": {"fp32": {"file": "anomaly.onnx"}}}
        names += ["anomaly.onnx", HEALTH_SPEC, ANOMALY_FEATURE_SPEC]
    data = {"pump_class": "esp", "model_version": str(model_version), **found, **fields}
    return BundleManifest.parse({**data, "members": {n: "0" * 64 for n in names}})
