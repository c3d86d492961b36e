"""The scoring service's doors, in process (the real FastAPI app and its middleware, the
replica's routes on a numpy model; no Ray, no sockets): credentials, content types and
body limits before a body is read, the one validation of readings at every route, device
identity on uploads (issue 16)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pumpfleet import devices, records
from pumpfleet.predlog import PredictionLog
from pumpfleet.routing import Arm
from serve_apps import doors
from serve_apps.model_set import ModelSet, ServedClass, ServedModel
from serve_apps.schemas import ARROW_STREAM, ScoringConfig
from serve_apps.scoring import PumpScorer
from serve_apps.security import digest
from tests.unit.test_features import spec

KEY = "scoring-key-0123456789"
TOKEN = "admin-token-0123456789"
W = 4
SPEC = spec(window=W)
SMALL = 4096  # the small body limit in these tests
LARGE = 65536


def run(x: np.ndarray) -> np.ndarray:
    return np.full((len(x), 2), 0.25)


def served_app() -> Any:
    """The app Serve runs for the deployment: ``@serve.ingress`` serves a copy of
    ``http_app.app`` frozen when the class was decorated, and the replica's methods see
    that copy as their ``app`` (so the state they set is the state the doors read)."""
    cls = PumpScorer.func_or_class  # type: ignore[attr-defined]
    frozen = inspect.getclosurevars(cls.__init__).nonlocals["frozen_app_or_func"]
    assert cls._load_devices.__globals__["app"] is frozen
    return frozen


app = served_app()


class Service:
    """The app with a replica of the deployment class behind it (its routes' ``self``)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, **config: Any) -> None:
        from ray import serve

        self.root = root
        cfg = ScoringConfig(
            tracking_uri="sqlite:///unused",
            predictions_dir=str(root / "predictions"),
            **{
                "api_key_sha256": [digest(KEY)],
                "admin_token_sha256": [digest(TOKEN)],
                "max_body_bytes": LARGE,
                "max_small_body_bytes": SMALL,
                **config,
            },
        )
        # the class as written (Serve's wrapper around it has an async __del__)
        scorer = object.__new__(PumpScorer.func_or_class.__mro__[1])  # type: ignore[attr-defined]
        scorer._stop = threading.Event()
        scorer.config = cfg
        scorer.models = ModelSet(FakeRegistry(), cfg.aliases(), 0.0, cfg.salt)  # type: ignore[arg-type]
        served = ServedClass({Arm.CHAMPION: ServedModel("1", SPEC, run)}, weight=0.0)
        scorer.models.classes = {"esp": served}
        scorer.log = PredictionLog(cfg.predictions_dir, max_rows=10**6)
        scorer.feedback_log = PredictionLog(
            str(root / "predictions-feedback"), to_table=records.feedback_table
        )
        scorer._shadow = ThreadPoolExecutor(max_workers=1)
        self.scorer = scorer
        context = SimpleNamespace(servable_object=scorer)
        monkeypatch.setattr(serve, "get_replica_context", lambda: context)
        monkeypatch.setattr(app.state, "config", cfg, raising=False)
        # the hot route's lean path, as the replica's __init__ sets it
        monkeypatch.setattr(app.state, "score_one", scorer.score_body, raising=False)
        monkeypatch.setattr(
            app.state, "devices", devices.Verifier(devices.DeviceBook()), raising=False
        )
        self.scorer._load_devices()

    def issue(self, device: str) -> str:
        """A device token, as ``pumpfleet edge device issue`` makes one, read as a refresh
        would."""
        token = devices.issue(str(self.root / devices.FILE), device)
        self.scorer._load_devices()
        return token

    def call(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | list[bytes] = b"",
        declare: int | None = None,
        stall: bool = False,
    ) -> tuple[int, Any, int]:
        """(status, answer, how many body messages the app read). ``body`` as a list:
        sent in chunks without a length (chunked); ``declare``: the content-length sent
        (the body may be shorter: nothing should read it); ``stall``: the client never
        sends the rest."""
        chunks = body if isinstance(body, list) else [body]
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if isinstance(body, list):
            raw.append((b"transfer-encoding", b"chunked"))
        elif declare is not None or body:
            raw.append(
                (b"content-length", str(declare if declare is not None else len(body)).encode())
            )
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": raw,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }
        reads = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal reads
            if reads < len(chunks):
                reads += 1
                last = reads == len(chunks) and not stall
                return {"type": "http.request", "body": chunks[reads - 1], "more_body": not last}
            await asyncio.sleep(3600)  # a client that sends nothing more
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        status = sent[0]["status"]
        data = b"".join(m.get("body", b"") for m in sent[1:])
        kind = dict(sent[0]["headers"]).get(b"content-type", b"")
        return status, json.loads(data) if kind.startswith(b"application/json") else data, reads

    def post(
        self, path: str, payload: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        h = {"x-api-key": KEY, "content-type": "application/json", **(headers or {})}
        status, answer, _ = self.call("POST", path, h, json.dumps(payload).encode())
        return status, answer


class FakeRegistry:
    def __init__(self) -> None:
        self.tags: dict[str, dict[str, Any]] = {}

    def set_model_tags(self, name: str, tags: dict[str, Any]) -> None:
        self.tags.setdefault(name, {}).update(tags)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    s = Service(tmp_path, monkeypatch)
    yield s
    s.scorer._shadow.shutdown()


def window(motor_temp: float = 80.0, flow: float = 1000.0) -> dict[str, list[float | None]]:
    return {"motor_temp": [motor_temp] * W, "flow": [flow] * W}


def item(pump: str = "esp-1", readings: Any = None) -> dict[str, Any]:
    return {"pump_id": pump, "pump_class": "esp", "readings": readings or window()}


def arrow(
    ids: list[Any], windows: list[list[float | None]], compression: str | None = None
) -> bytes:
    table = pa.table(
        {
            "pump_id": pa.array(ids, pa.string()),
            "pump_class": ["esp"] * len(ids),
            "window": pa.array(windows, pa.list_(pa.float32())),
        }
    )
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


# --- limits before work ------------------------------------------------------------------

HUGE = 100 * 2**20


@pytest.mark.parametrize(
    "path", ["/v1/score", "/v1/score/batch", "/v1/feedback", "/v1/edge/upload"]
)
def test_no_key_is_refused_before_the_body_is_read(service: Service, path: str) -> None:
    # found: a 100 MB body with no key to /v1/score was parsed (422), not refused (401)
    headers = {"content-type": "application/json"}
    status, answer, reads = service.call("POST", path, headers, b"{", declare=HUGE)
    assert (status, answer, reads) == (401, {"detail": "missing or invalid credentials"}, 0)
    status, _, reads = service.call(
        "POST", path, {**headers, "x-api-key": "wrong-key-0123456789"}, b"{", declare=HUGE
    )
    assert (status, reads) == (401, 0)


@pytest.mark.parametrize(
    ("path", "headers", "limit"),
    [
        ("/v1/score", {"x-api-key": KEY}, SMALL),
        ("/v1/score/batch", {"x-api-key": KEY}, LARGE),
        ("/v1/feedback", {"x-api-key": KEY}, SMALL),  # found: read 100 MB
        ("/v1/edge/upload", {"x-api-key": KEY}, LARGE),  # found: read 100 MB
        ("/v1/admin/split", {"authorization": f"Bearer {TOKEN}"}, SMALL),
        ("/v1/admin/reload", {"authorization": f"Bearer {TOKEN}"}, SMALL),
        ("/healthz", {}, SMALL),
        ("/no/such/route", {}, SMALL),
    ],
)  # fmt: skip
def test_every_route_has_a_size_limit_declared_or_read(
    service: Service, path: str, headers: dict[str, str], limit: int
) -> None:
    if path == "/v1/edge/upload":
        headers = {"x-api-key": service.issue("dev-1")}
    h = {**headers, "content-type": "application/json"}
    status, answer, reads = service.call("POST", path, h, b"{}", declare=limit + 1)
    assert (status, answer, reads) == (413, {"detail": f"body over {limit} bytes"}, 0)
    # sent in chunks without a length: refused as soon as it is over, the rest unread
    chunks = [b" " * 1024] * (limit // 1024 + 4)
    status, answer, reads = service.call("POST", path, h, chunks)
    assert (status, answer, reads) == (
        413,
        {"detail": f"body over {limit} bytes"},
        limit // 1024 + 1,
    )


def test_a_body_sent_too_slowly_gets_408(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = Service(tmp_path, monkeypatch, body_timeout_seconds=0.2)
    h = {"x-api-key": KEY, "content-type": "application/json"}
    status, answer, _ = service.call("POST", "/v1/score", h, b'{"pump', declare=100, stall=True)
    assert (status, answer) == (408, {"detail": "the body did not arrive within 0.2 s"})


@pytest.mark.parametrize(
    ("path", "ctype", "takes"),
    [
        ("/v1/score", "text/plain", "application/json"),
        ("/v1/score", None, "application/json"),
        ("/v1/score/batch", "application/x-www-form-urlencoded",
         f"application/json or {ARROW_STREAM}"),
        ("/v1/feedback", "application/xml", "application/json"),
    ],
)  # fmt: skip
def test_a_wrong_content_type_gets_415_before_the_body_is_read(
    service: Service, path: str, ctype: str | None, takes: str
) -> None:
    h = {"x-api-key": KEY} | ({"content-type": ctype} if ctype else {})
    status, answer, reads = service.call("POST", path, h, json.dumps(item()).encode())
    shown = ctype or "(none)"
    assert (status, answer, reads) == (
        415,
        {"detail": f"content-type {shown} is not accepted here: send {takes}"},
        0,
    )
    # with a charset it is the same media type
    h["content-type"] = "Application/JSON; charset=utf-8"
    assert service.call("POST", "/v1/score", h, json.dumps(item()).encode())[0] == 200


def test_every_v1_route_has_its_own_door() -> None:
    v1 = {p for p in app.openapi()["paths"] if p.startswith("/v1/")}
    assert v1 == set(doors.DOORS)
    # a route added without a door is not open
    assert doors.door_of("/v1/new-thing").who is doors.Who.SCORING
    assert doors.door_of("/healthz").who is doors.Who.ANYONE


def test_scoring_admin_and_device_credentials_each_open_their_own_doors(service: Service) -> None:
    token = service.issue("dev-1")
    admin = {"authorization": f"Bearer {TOKEN}"}
    assert service.call("GET", "/v1/models", {"x-api-key": KEY})[0] == 200
    assert service.call("GET", "/v1/models", admin)[0] == 401
    assert service.call("GET", "/v1/models", {"x-api-key": token})[0] == 401
    assert service.call("POST", "/v1/admin/reload", {"x-api-key": KEY})[:2] == (
        403,
        {"detail": "this key may not use admin routes"},
    )
    assert service.call("GET", "/healthz")[0] == 200


# --- one validation of readings --------------------------------------------------------


def loc_msg(answer: Any) -> list[tuple[list[Any], str]]:
    return [(d["loc"], d["msg"]) for d in answer["detail"]]


@pytest.mark.parametrize(
    ("readings", "loc", "msg"),
    [
        (window(motor_temp=-1e6), ["body", "readings", "motor_temp"],
         "-1e+06 is outside its physical range -40 to 250"),
        (window(motor_temp=9999), ["body", "readings", "motor_temp"],
         "9999 is outside its physical range -40 to 250"),
        ({"motor_temp": [None] * W, "flow": [None, None, None, 1000.0]}, ["body", "readings"],
         "12% of the window's channel readings are present, at least 50% needed"),
    ],
)  # fmt: skip
def test_readings_with_no_physical_meaning_are_refused_naming_the_field(
    service: Service, readings: Any, loc: list[Any], msg: str
) -> None:
    # found: motor temperature -1e6 C scored 168 h, an all-null window 166.7 h
    status, answer = service.post("/v1/score", item(readings=readings))
    assert (status, loc_msg(answer)) == (422, [(loc, msg)])
    status, answer = service.post("/v1/score/batch", {"items": [item(), item(readings=readings)]})
    assert status == 200
    assert answer["errors"] == [{"index": 1, "loc": loc[1:], "msg": msg}]
    assert answer["results"][0]["rul_hours"] == 25.0 and answer["results"][1] is None


@pytest.mark.parametrize("value", ["12.5", True])
def test_strings_and_booleans_are_not_readings(service: Service, value: Any) -> None:
    readings = {**window(), "flow": [1000.0, value, 1000.0, 1000.0]}
    status, answer = service.post("/v1/score", item(readings=readings))
    assert status == 422
    assert loc_msg(answer) == [(["body", "readings", "flow", 1], "Input should be a valid number")]
    status, answer = service.post("/v1/score/batch", {"items": [item(readings=readings), item()]})
    assert answer["errors"] == [
        {"index": 0, "loc": ["readings", "flow", 1], "msg": "Input should be a valid number"}
    ]


def test_an_arrow_batch_gets_the_same_validation_by_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(tmp_path, monkeypatch, max_body_bytes=4 * 2**20)
    ok = [80.0, 1000.0] * W
    hot = [9999.0, 1000.0] * W
    empty: list[float | None] = [None] * (2 * W)
    huge_id = "p" * 2**20  # found: a 1 MB pump id was accepted on the Arrow path
    body = arrow(["a", "b", "c", huge_id], [ok, hot, empty, ok])
    h = {"x-api-key": KEY, "content-type": ARROW_STREAM}
    status, answer, _ = service.call("POST", "/v1/score/batch", h, body)
    assert status == 200, answer
    assert [r is not None for r in answer["results"]] == [True, False, False, False]
    assert answer["errors"] == [
        {"index": 1, "loc": ["window", "motor_temp"],
         "msg": "9999 is outside its physical range -40 to 250"},
        {"index": 2, "loc": ["window"],
         "msg": "0% of the window's channel readings are present, at least 50% needed"},
        {"index": 3, "loc": ["pump_id"],
         "msg": "1 to 128 printable characters, got '" + "p" * 56 + "..."},
    ]  # fmt: skip


def test_a_compressed_arrow_bomb_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # found: 90 KB of zstd declaring 9,000 x 14,000 float32 grew a replica by 1.7 GB
    service = Service(tmp_path, monkeypatch, max_body_bytes=2**20, max_decoded_bytes=2**20)
    n, k = 900, 14_000  # 50 MB decoded, 10 KB sent
    values = pa.array(np.zeros(n * k, dtype=np.float32))
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    table = pa.table(
        {
            "pump_id": [f"p{i}" for i in range(n)],
            "pump_class": ["esp"] * n,
            "window": pa.ListArray.from_arrays(offsets, values),
        }
    )
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    bomb = bytes(sink.getvalue().to_pybytes())
    assert len(bomb) < 20_000

    def no_decoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded before its size was checked")

    monkeypatch.setattr(pa.ipc, "read_record_batch", no_decoding)
    h = {"x-api-key": KEY, "content-type": ARROW_STREAM}
    status, answer, _ = service.call("POST", "/v1/score/batch", h, bomb)
    assert (status, answer) == (413, {"detail": f"Arrow batch over {2**20} bytes decoded"})


def test_a_small_compressed_arrow_batch_is_scored(service: Service) -> None:
    body = arrow(["a", "b"], [[80.0, 1000.0] * W] * 2, compression="lz4")
    h = {"x-api-key": KEY, "content-type": ARROW_STREAM}
    status, answer, _ = service.call("POST", "/v1/score/batch", h, body)
    assert status == 200 and answer["errors"] == []
    assert [r["rul_hours"] for r in answer["results"]] == [25.0, 25.0]


# --- feedback and the split --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"pump_class": "../../etc"}, ["body", "pump_class"]),  # found: accepted
        ({"pump_id": "x" * 129}, ["body", "pump_id"]),
        ({"pump_id": " padded"}, ["body", "pump_id"]),
        ({"rul_hours": 1e300}, ["body", "rul_hours"]),  # found: accepted
        ({"rul_hours": "12"}, ["body", "rul_hours"]),
        ({"failed_at": -1e30}, ["body", "failed_at"]),
        ({"failed_at": 5e9}, ["body", "failed_at"]),  # after 2100
        ({"observed_at": True}, ["body", "observed_at"]),
    ],
)
def test_feedback_is_refused_naming_the_field(
    service: Service, change: dict[str, Any], loc: list[str]
) -> None:
    good = {"pump_id": "esp-1", "pump_class": "esp", "rul_hours": 30.0}
    assert service.post("/v1/feedback", good) == (200, {"accepted": 1})
    status, answer = service.post("/v1/feedback", {**good, **change})
    assert status == 422 and [d["loc"] for d in answer["detail"]] == [loc]


def test_the_split_takes_only_a_boolean_for_shadow(service: Service) -> None:
    admin = {"authorization": f"Bearer {TOKEN}"}
    # found: "shadow": "yes" turned shadow on
    status, answer = service.post("/v1/admin/split", {"shadow": "yes"}, admin)
    assert status == 422 and loc_msg(answer) == [
        (["body", "shadow"], "Input should be a valid boolean")
    ]
    assert service.scorer.models.classes["esp"].shadow is False
    status, answer = service.post("/v1/admin/split", {"challenger_weight": "0.3"}, admin)
    assert status == 422 and [d["loc"] for d in answer["detail"]] == [["body", "challenger_weight"]]
    status, answer = service.post("/v1/admin/split", {"challenger_weight": 0.3}, admin)
    assert status == 200 and answer["esp"] == {"challenger_weight": 0.3, "shadow": False}


def test_models_say_what_is_served_per_class_and_whether_the_weight_was_saved(
    service: Service,
) -> None:
    # found: saved split tags were served while /v1/models reported the flag's weight
    status, answer, _ = service.call("GET", "/v1/models", {"x-api-key": KEY})
    assert status == 200
    assert answer["default_challenger_weight"] == 0.2
    assert answer["classes"]["esp"]["challenger_weight"] == 0.0
    assert answer["classes"]["esp"]["weight_saved"] is False
    admin = {"authorization": f"Bearer {TOKEN}"}
    service.post("/v1/admin/split", {"challenger_weight": 0.7}, admin)
    listed = service.call("GET", "/v1/models", {"x-api-key": KEY})[1]["classes"]["esp"]
    assert (listed["challenger_weight"], listed["weight_saved"]) == (0.7, True)


# --- device identity ---------------------------------------------------------------------


def upload(device: str, key: str, n: int = 2) -> dict[str, Any]:
    records_ = [
        {"request_id": f"{key}-{i}", "timestamp": 1_700_000_000 * 10**9, "pump_id": "esp-1",
         "pump_class": "esp", "model_version": "1", "rul_hours": 50.0 + i,
         "failure_probability": 0.1}
        for i in range(n)
    ]  # fmt: skip
    return {"device_id": device, "batch_key": key, "records": records_}


def test_a_device_uploads_with_its_own_token_and_only_as_itself(service: Service) -> None:
    token = service.issue("dev-1")
    other = service.issue("dev-2")
    as_key = {"x-api-key": token}
    assert service.post("/v1/edge/upload", upload("dev-1", "b1"), as_key) == (
        200,
        {"stored": 2, "duplicate": False},
    )
    bearer = {"x-api-key": "", "authorization": f"Bearer {token}"}
    assert service.post("/v1/edge/upload", upload("dev-1", "b1"), bearer) == (
        200,
        {"stored": 0, "duplicate": True},
    )
    # another device's token: refused as that device
    status, answer = service.post("/v1/edge/upload", upload("dev-1", "b2"), {"x-api-key": other})
    assert (status, answer) == (
        403,
        {"detail": "this token is device dev-2's: it may not upload as another"},
    )
    # found: any scoring key could upload as any device
    status, answer = service.post("/v1/edge/upload", upload("dev-1", "b3"))
    assert status == 403 and "pumpfleet edge device issue" in answer["detail"]
    # found: a replayed batch key with other records was silently dropped as a duplicate
    status, answer = service.post("/v1/edge/upload", upload("dev-1", "b1", n=3), as_key)
    assert (status, answer) == (
        409,
        {"detail": "batch_key b1 was stored before with other records"},
    )
    forged = token[:-4] + "AAAA"
    assert service.post("/v1/edge/upload", upload("dev-1", "b4"), {"x-api-key": forged})[0] == 401


def test_a_revoked_device_is_refused_from_the_next_refresh(service: Service) -> None:
    token = service.issue("dev-1")
    assert service.post("/v1/edge/upload", upload("dev-1", "b1"), {"x-api-key": token})[0] == 200
    devices.revoke(str(service.root / devices.FILE), "dev-1")
    service.scorer._load_devices()  # what each refresh does
    assert service.post("/v1/edge/upload", upload("dev-1", "b2"), {"x-api-key": token})[0] == 401


def test_insecure_dev_lets_any_caller_upload_as_any_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(tmp_path, monkeypatch, insecure_dev=True)
    assert service.post("/v1/edge/upload", upload("dev-9", "b1"), {"x-api-key": ""})[0] == 200


def test_an_unreadable_device_book_lets_no_device_in(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    token = service.issue("dev-1")
    (service.root / devices.FILE).write_text("{not json")
    with caplog.at_level(logging.ERROR):
        service.scorer._load_devices()
    assert "cannot be read: no device may upload" in caplog.text
    assert service.post("/v1/edge/upload", upload("dev-1", "b1"), {"x-api-key": token})[0] == 401


# --- no single record stops a loop -----------------------------------------------------------


def test_a_failing_flush_or_refresh_is_logged_with_its_traceback_and_the_loop_goes_on(
    service: Service, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve_apps import metrics

    failed: list[str] = []
    monkeypatch.setattr(metrics, "loop_failed", failed.append)
    broken = [True]

    def to_table(rows: Any) -> Any:
        if broken[0]:
            raise ValueError("a row that does not fit")
        return records.rows_to_table(rows)

    service.scorer.log.to_table = to_table
    service.post("/v1/score", item())
    with caplog.at_level(logging.ERROR):
        service.scorer._flush_once()
    assert failed == ["prediction log flush"]
    assert "prediction log flush failed; carrying on" in caplog.text
    assert "ValueError: a row that does not fit" in caplog.text  # the traceback
    broken[0] = False
    service.post("/v1/score", item())
    service.scorer._flush_once()  # the next flush goes on
    assert service.scorer.log.written == 1 and failed == ["prediction log flush"]

    def down() -> None:
        raise ConnectionError("registry down")

    monkeypatch.setattr(service.scorer.models, "refresh", down)
    from serve_apps.scoring import guarded

    assert guarded("refresh", service.scorer._refresh) is False
    assert failed[-1] == "refresh"
    # the device book is re-read even when the registry is down
    token = service.issue("dev-1")
    guarded("refresh", service.scorer._refresh)
    assert service.post("/v1/edge/upload", upload("dev-1", "b1"), {"x-api-key": token})[0] == 200


# --- the hot route's lean path ----------------------------------------------------------


def _raw(service: Service, payload: Any) -> tuple[int, bytes, dict[bytes, bytes]]:
    """(status, body bytes, headers) of a /v1/score call."""
    h = {"x-api-key": KEY, "content-type": "application/json"}
    sent: list[dict[str, Any]] = []
    data = json.dumps(payload).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/score", "raw_path": b"/v1/score", "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
        "headers": [(k.encode(), v.encode()) for k, v in h.items()]
        + [(b"content-length", str(len(data)).encode())],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return (
        sent[0]["status"],
        b"".join(m.get("body", b"") for m in sent[1:]),
        dict(sent[0]["headers"]),
    )


def test_the_lean_path_answers_the_bytes_and_headers_of_the_route(service: Service) -> None:
    readings = {"motor_temp": [80.5, None, 81.0, 82.25], "flow": [1000, 1001.5, 999.0, 1e3]}
    taken: list[bytes] = []
    lean = service.scorer.score_body

    def counted(body: bytes) -> bytes | None:
        out = lean(body)
        if out is not None:
            taken.append(out)
        return out

    app.state.score_one = counted
    status, fast, fast_headers = _raw(service, item("esp-ü 7", readings))
    assert status == 200 and len(taken) == 1
    app.state.score_one = None  # the route alone, as before
    try:
        status, routed, routed_headers = _raw(service, item("esp-ü 7", readings))
    finally:
        app.state.score_one = lean
    assert status == 200
    assert fast == routed
    assert fast_headers == routed_headers
    assert json.loads(fast)["rul_hours"] == pytest.approx(25.0)
    service.scorer.log.flush()
    rows = pa.concat_tables(
        pa.parquet.read_table(p) for p in sorted((service.root / "predictions").rglob("*.parquet"))
    )
    assert rows.column("pump_id").to_pylist() == ["esp-ü 7", "esp-ü 7"]  # each logged once


@pytest.mark.parametrize(
    "payload, loc, words",
    [
        (item(readings={"motor_temp": ["80"] * W, "flow": [1000.0] * W}), "motor_temp", "number"),
        ({**item(), "extra": 1}, "extra", "Extra inputs"),
        (item(pump=""), "pump_id", ""),
        ({**item(), "pump_class": "esp\n"}, "pump_class", "pattern"),
        (item(readings={"motor_temp": [80.0] * (W - 1), "flow": [1000.0] * W}), "readings", ""),
        ({**item(), "pump_class": "rod"}, "pump_class", "unserved"),
    ],
)
def test_what_the_lean_path_does_not_take_the_route_answers_as_before(
    service: Service, payload: dict[str, Any], loc: str, words: str
) -> None:
    taken: list[bytes | None] = []
    lean = service.scorer.score_body
    app.state.score_one = lambda body: taken.append(lean(body)) or taken[-1]
    status, answer = service.post("/v1/score", payload)
    assert taken == [None]
    assert status == 422
    detail = answer["detail"][0]
    assert loc in detail["loc"] and words in detail["msg"]
    service.scorer.log.flush()
    assert not list((service.root / "predictions").rglob("*.parquet"))  # nothing logged


def test_an_explanation_is_the_routes_to_give(service: Service) -> None:
    status, answer = service.post("/v1/score", {**item(), "explain": True})
    assert status == 200 and answer["explanation"] is not None
