"""Where errors become HTTP answers (the app's exception handlers, one place), who may
call a route, and the retrain route's settings: no Ray, no server."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from pumpfleet.errors import InputError, PumpfleetError
from serve_apps.errors import (
    BodyTooLarge,
    Forbidden,
    InvalidFields,
    NothingScored,
    Unauthorized,
    Unavailable,
)
from serve_apps.http_app import app, read_body, require_admin, require_key
from serve_apps.schemas import ScoringConfig
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


def request(headers: dict[str, str], body: bytes = b"", **config: Any) -> Any:
    cfg = ScoringConfig(
        tracking_uri="sqlite:///x",
        predictions_dir="p",
        api_key_sha256=[digest(KEY)],
        admin_token_sha256=[digest(TOKEN)],
        **config,
    )

    async def read() -> bytes:
        return body

    state = SimpleNamespace(config=cfg)
    return SimpleNamespace(app=SimpleNamespace(state=state), headers=headers, body=read)


def test_scoring_routes_need_a_key_and_admin_routes_the_token() -> None:
    asyncio.run(require_key(request({"x-api-key": KEY})))
    with pytest.raises(Unauthorized):
        asyncio.run(require_key(request({})))
    with pytest.raises(Unauthorized):
        asyncio.run(require_key(request({"x-api-key": KEY + "x"})))
    asyncio.run(require_key(request({}, insecure_dev=True)))
    asyncio.run(require_admin(request({"authorization": f"Bearer {TOKEN}"})))
    with pytest.raises(Forbidden):
        asyncio.run(require_admin(request({"x-api-key": KEY})))
    with pytest.raises(Unauthorized):
        asyncio.run(require_admin(request({})))


def test_a_body_over_the_limit_is_refused_declared_or_read() -> None:
    assert asyncio.run(read_body(request({}, b"12345"), 5)) == b"12345"
    with pytest.raises(BodyTooLarge, match="body over 5 bytes"):
        asyncio.run(read_body(request({"content-length": "6"}, b""), 5))
    with pytest.raises(BodyTooLarge, match="body over 5 bytes"):
        asyncio.run(read_body(request({}, b"123456"), 5))


def test_retrain_submits_with_the_ray_token_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pumpfleet.job_options as job_options
    from pumpfleet.settings import get_settings
    from serve_apps.model_set import ModelSet
    from serve_apps.schemas import RetrainRequest
    from serve_apps.scoring import PumpScorer

    sent: list[tuple[str, Any, str | None]] = []

    def submit(address: str, options: Any, token: str | None) -> str:
        sent.append((address, options, token))
        return "raysubmit_1"

    monkeypatch.setattr(job_options, "submit_retrain", submit)
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
    ((address, options, token),) = sent
    assert (address, token) == ("http://head:8265", "the-cluster-token")
    assert (options.reason, options.epochs) == ("drift", 3)
    with pytest.raises(InvalidFields) as e:
        retrain(scorer, RetrainRequest(reason="x", classes=["submarine"]), None)
    assert e.value.problems == [(["classes"], "unknown or unserved class 'submarine'")]
    scorer.config = cfg.model_copy(update={"jobs_address": None})
    with pytest.raises(Unavailable, match="PUMPFLEET_JOBS_ADDRESS"):
        retrain(scorer, RetrainRequest(reason="x"), None)
