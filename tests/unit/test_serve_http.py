"""Where errors become HTTP answers (the app's exception handlers, one place), who may
call a route, and the retrain route's settings: no Ray, no server."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from pumpfleet.devices import DeviceBook, Verifier
from pumpfleet.errors import ConflictError, InputError, PumpfleetError
from serve_apps.doors import (
    CALLER,
    Caller,
    Refusal,
    Who,
    admit,
    body_limit,
    body_problem,
    door_of,
    read_within,
)
from serve_apps.errors import (
    BodyTooLarge,
    Forbidden,
    InvalidFields,
    NothingScored,
    Unauthorized,
    Unavailable,
)
from serve_apps.http_app import app, require_admin, require_key
from serve_apps.schemas import ARROW_STREAM, ScoringConfig
from serve_apps.security import digest

KEY = "scoring-key-0123456789"
TOKEN = "admin-token-0123456789"


def answer(exc: Exception) -> tuple[int, Any, dict[str, str]]:
    """What the app answers for ``exc``: its handler, found as Starlette finds it."""
    handler = next(
        app.exception_handlers[c] for c in type(exc).__mro__ if c in app.exception_handlers
    )
    response = asyncio.run(handler(None, exc))  # type: ignore[arg-type]
    return response.status_code, json.loads(response.body)["detail"], dict(response.headers)


@pytest.mark.parametrize(
    ("exc", "status", "detail"),
    [
        (
            InvalidFields.at("readings.flow", "expected 24 values, got 2"),
            422,
            [{"loc": ["body", "readings", "flow"], "msg": "expected 24 values, got 2"}],
        ),
        (
            InvalidFields([([], "Invalid JSON"), (["items", 0], "bad")]),
            422,
            [{"loc": ["body"], "msg": "Invalid JSON"}, {"loc": ["body", "items", 0], "msg": "bad"}],
        ),
        (
            NothingScored([{"index": 0, "loc": ["pump_class"], "msg": "unknown"}]),
            422,
            {
                "msg": "no item could be scored",
                "errors": [{"index": 0, "loc": ["pump_class"], "msg": "unknown"}],
            },
        ),
        # the core's own input errors (an edge upload's): the whole message under "body"
        (
            InputError("records.0.request_id: Field required"),
            422,
            [{"loc": ["body"], "msg": "records.0.request_id: Field required"}],
        ),
        (BodyTooLarge("body over 10 bytes"), 413, "body over 10 bytes"),
        # a batch key replayed with other records (an edge upload)
        (ConflictError("batch_key b1 was stored before with other records"), 409,
         "batch_key b1 was stored before with other records"),
        (Forbidden("this key may not use admin routes"), 403, "this key may not use admin routes"),
        (Unavailable("no job server"), 503, "no job server"),
    ],
)  # fmt: skip
def test_each_error_has_one_answer(exc: Exception, status: int, detail: Any) -> None:
    assert answer(exc)[:2] == (status, detail)


def test_a_missing_credential_asks_for_a_bearer_token() -> None:
    status, detail, headers = answer(Unauthorized("missing or invalid credentials"))
    assert (status, detail) == (401, "missing or invalid credentials")
    assert headers["www-authenticate"] == "Bearer"


def test_an_error_the_service_did_not_mean_stays_a_500() -> None:
    assert PumpfleetError not in app.exception_handlers
    assert Exception not in app.exception_handlers


def config(**extra: Any) -> ScoringConfig:
    return ScoringConfig(
        tracking_uri="sqlite:///x",
        predictions_dir="p",
        api_key_sha256=[digest(KEY)],
        admin_token_sha256=[digest(TOKEN)],
        **extra,
    )


NO_DEVICES = Verifier(DeviceBook())


def let_in(path: str, headers: dict[str, str], **extra: Any) -> Any:
    """What the door of ``path`` decides for these headers."""
    return admit(
        door_of(path),
        headers.get("x-api-key"),
        headers.get("authorization"),
        config(**extra),
        NO_DEVICES,
    )


def test_scoring_routes_need_a_key_and_admin_routes_the_token() -> None:
    assert let_in("/v1/score", {"x-api-key": KEY}) == Caller(Who.SCORING)
    assert let_in("/v1/score", {}) == Refusal(401, "missing or invalid credentials")
    assert let_in("/v1/score", {"x-api-key": KEY + "x"}).status == 401
    assert let_in("/v1/score", {}, insecure_dev=True) == Caller(Who.SCORING)
    admin = {"authorization": f"Bearer {TOKEN}"}
    assert let_in("/v1/admin/reload", admin) == Caller(Who.ADMIN)
    assert let_in("/v1/admin/reload", {"x-api-key": KEY}) == Refusal(
        403, "this key may not use admin routes"
    )
    assert let_in("/v1/admin/reload", {}).status == 401
    assert let_in("/healthz", {}) == Caller(Who.ANYONE)


def test_a_route_is_never_reached_around_its_door() -> None:
    def request(caller: Any) -> Any:
        return SimpleNamespace(scope={} if caller is None else {CALLER: caller})

    asyncio.run(require_key(request(Caller(Who.SCORING))))
    asyncio.run(require_admin(request(Caller(Who.ADMIN))))
    for caller in (None, Caller(Who.ANYONE), Caller(Who.DEVICE, "d")):
        with pytest.raises(Unauthorized):
            asyncio.run(require_key(request(caller)))
    with pytest.raises(Unauthorized):  # a scoring key's pass opens no admin route
        asyncio.run(require_admin(request(Caller(Who.SCORING))))


def test_a_body_is_checked_for_its_type_and_declared_size_before_it_is_read() -> None:
    score, batch = door_of("/v1/score"), door_of("/v1/score/batch")
    json_ = "application/json"
    assert body_problem(score, json_, 5, True, 5) is None
    assert body_problem(score, json_, 6, True, 5) == Refusal(413, "body over 5 bytes")
    assert body_problem(score, "text/plain", 6, True, 5) == Refusal(
        415, "content-type text/plain is not accepted here: send application/json"
    )
    assert body_problem(score, None, None, False, 5) is None  # no body: nothing to check
    assert body_problem(batch, ARROW_STREAM + "; x=1", 5, True, 5) is None
    assert body_limit(score, config()) == 2**20
    assert body_limit(batch, config()) == 32 * 2**20
    assert body_limit(score, config(max_body_bytes=1000)) == 1000


def test_a_body_sent_in_chunks_is_refused_once_over_its_limit() -> None:
    sent = [b"12", b"34", b"56", b"78"]

    def receiver() -> Any:
        async def receive() -> dict[str, Any]:
            chunk = sent[len(taken)]
            taken.append(chunk)
            return {"type": "http.request", "body": chunk, "more_body": len(taken) < len(sent)}

        return receive

    taken: list[bytes] = []
    assert asyncio.run(read_within(receiver(), 8, 1.0)) == b"12345678"
    taken = []
    assert asyncio.run(read_within(receiver(), 5, 1.0)) == Refusal(413, "body over 5 bytes")
    assert taken == [b"12", b"34", b"56"]  # the rest is never read


def test_retrain_submits_with_the_ray_token_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pumpfleet.settings import get_settings
    from serve_apps.model_set import ModelSet
    from serve_apps.schemas import RetrainRequest
    from serve_apps.scoring import PumpScorer

    sent: list[tuple[str, Any, str | None]] = []

    class Client:  # Ray's job client, as the replica calls it
        def __init__(self, address: str, headers: dict[str, str] | None = None) -> None:
            self.address, self.headers = address, headers or {}

        def submit_job(self, **job: Any) -> str:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ") or None
            sent.append((self.address, job, token))
            return "raysubmit_1"

    monkeypatch.setattr("ray.job_submission.JobSubmissionClient", Client)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-cluster-token")
    cfg = ScoringConfig(tracking_uri="x", predictions_dir="p", jobs_address="http://head:8265")
    models = ModelSet(None, cfg.aliases(), 0.2, "s")  # type: ignore[arg-type]
    models.classes = {"esp": None}  # type: ignore[dict-item]
    scorer = SimpleNamespace(config=cfg, models=models)
    retrain = PumpScorer.func_or_class.retrain  # type: ignore[attr-defined]
    get_settings.cache_clear()
    try:
        out = retrain(scorer, RetrainRequest(reason="drift", epochs=3), None)
    finally:
        get_settings.cache_clear()
    assert out == {"job_id": "raysubmit_1", "classes": ["esp"]}
    ((address, job, token),) = sent
    assert (address, token) == ("http://head:8265", "the-cluster-token")
    assert job["metadata"] == {"pumpfleet": "retrain", "reason": "drift", "classes": ""}
    assert "--epochs 3" in job["entrypoint"] and job["submission_id"].startswith(
        "pumpfleet-retrain-"
    )
    with pytest.raises(InvalidFields) as e:
        retrain(scorer, RetrainRequest(reason="x", classes=["submarine"]), None)
    assert e.value.problems == [(["classes"], "unknown or unserved class 'submarine'")]
    scorer.config = cfg.model_copy(update={"jobs_address": None})
    with pytest.raises(Unavailable, match="PUMPFLEET_JOBS_ADDRESS"):
        retrain(scorer, RetrainRequest(reason="x"), None)
