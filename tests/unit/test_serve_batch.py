"""The service's one scoring path without a server: decode → group by class and arm →
score → encode, and the prediction-log rows of what was scored."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pumpfleet import records
from pumpfleet.features import FeatureSpec, readings_to_window
from pumpfleet.health import calibrate
from pumpfleet.routing import Arm, assign_arm
from pumpfleet.scoring import HealthModel, score_windows
from serve_apps import batch, prediction_log
from serve_apps.errors import InvalidFields, NothingScored
from serve_apps.model_set import ServedClass, ServedModel
from serve_apps.schemas import ANSWER_FIELDS, ScoreRequest

SALT = "salt"
W = 4


def spec(channels: tuple[str, ...] = ("motor_temp", "flow")) -> FeatureSpec:
    return FeatureSpec(
        pump_class="esp",
        channels=list(channels),
        window=W,
        stride=1,
        interval_seconds=3600,
        rul_cap_hours=100.0,
        horizon_hours=24.0,
        mean=[80.0] * len(channels),
        std=[10.0] * len(channels),
    )


def rul_model(shift: float) -> Any:
    """Outputs that depend on each window (its mean feature), so that mixing windows up
    would show."""

    def run(x: np.ndarray) -> np.ndarray:
        m = 1 / (1 + np.exp(-x.mean(axis=(1, 2)) - shift))
        return np.column_stack([m, 1 - m])

    return run


HEALTH = HealthModel(
    "7",
    spec(),
    calibrate(np.linspace(0.1, 1.0, 50), "conv_ae", target_far=0.05),
    lambda x: np.abs(x).mean(axis=(1, 2))[:, None],
)


def served(shadow: bool = False, health: HealthModel | None = None) -> dict[str, ServedClass]:
    arms = {
        Arm.CHAMPION: ServedModel("1", spec(), rul_model(0.0)),
        Arm.CHALLENGER: ServedModel("2", spec(), rul_model(0.5)),
    }
    return {"esp": ServedClass(arms, weight=0.5, shadow=shadow, health=health)}


def item(pump: str, i: int = 0, cls: str = "esp") -> dict[str, Any]:
    rng = np.random.default_rng(i)
    return {
        "pump_id": pump,
        "pump_class": cls,
        "readings": {
            "motor_temp": list(rng.normal(80, 10, W)),
            "flow": list(rng.normal(80, 10, W)),
        },
    }


def run_batch(
    items: batch.Items, classes: dict[str, ServedClass]
) -> tuple[batch.Answers, list[batch.Group]]:
    """What the deployment does between decoding and encoding (less logging)."""
    answers = batch.Answers(len(items))
    groups = batch.group(items, classes, SALT)
    for g in groups:
        scores = batch.score(g)
        answers.fill(g, scores, batch.health_columns(g.served.health, scores, len(g.rows)))
    return answers, groups


def test_a_json_batch_is_decoded_once_with_bad_items_reported_by_index() -> None:
    good = item("p1")
    body = json.dumps(
        {"items": [good, {**good, "extra": 1}, {"pump_id": "p3"}, {**good, "pump_id": "p4"}]}
    ).encode()
    items = batch.decode_json(body)
    assert items.pump_id == ["p1", None, None, "p4"]
    assert items.pump_class == ["esp", None, None, "esp"]
    assert items.errors[1] == (["extra"], "Extra inputs are not permitted")
    assert items.errors[2][0] == ["pump_class"]  # the first of what is wrong
    assert sorted(items.errors) == [1, 2]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{nope", [[]]),  # answered under "body" alone
        (b'{"items": []}', [["items"]]),
        (b'{"items": [], "x": 1}', [["items"], ["x"]]),  # every problem, as FastAPI does
    ],
)
def test_a_body_that_is_no_batch_names_what_is_wrong(body: bytes, where: list[Any]) -> None:
    with pytest.raises(InvalidFields) as e:
        batch.decode_json(body)
    assert [loc for loc, _ in e.value.problems] == where


def test_items_are_grouped_by_class_and_arm_and_scored_like_one_call() -> None:
    pumps = [f"p{i}" for i in range(12)]
    raw = [item(p, i) for i, p in enumerate(pumps)]
    items = batch.decode_json(json.dumps({"items": raw}).encode())
    classes = served()
    answers, groups = run_batch(items, classes)
    assert {(g.pump_class, g.arm) for g in groups} == {
        ("esp", Arm.CHAMPION),
        ("esp", Arm.CHALLENGER),
    }
    out = batch.encode_json(items, answers)
    assert out["errors"] == []
    for i, (p, r) in enumerate(zip(pumps, out["results"], strict=True)):
        arm = assign_arm(p, 0.5, SALT)
        model = classes["esp"].arms[arm]
        window = readings_to_window(raw[i]["readings"], model.spec)[None]
        want = score_windows(window, model.spec, model.run).rul
        assert r["arm"] == str(arm) and r["model_version"] == model.version
        assert r["rul_hours"] == pytest.approx(float(want.rul_hours[0]), abs=1e-9)
        assert r["failure_probability"] == pytest.approx(float(want.failure_probability[0]))
        assert r["alert"] == bool(want.alert[0])
        assert set(r) == set(ANSWER_FIELDS)
        assert (r["health_score"], r["anomaly"], r["anomaly_version"]) == (None, None, None)


def test_routing_and_window_errors_land_on_their_items() -> None:
    good = item("p1")
    first = "motor_temp"
    raw = [
        good,
        {**good, "pump_class": "submarine"},
        {**good, "readings": {**good["readings"], first: [1.0, 2.0]}},
        {**good, "readings": {**good["readings"], "warp": [1.0] * W}},
        {**good, "readings": {"flow": good["readings"]["flow"]}},
    ]
    items = batch.decode_json(json.dumps({"items": raw}).encode())
    answers, _ = run_batch(items, served())
    out = batch.encode_json(items, answers)
    assert out["results"][0] is not None and out["results"][1:] == [None] * 4
    assert out["errors"] == [
        {"index": 1, "loc": ["pump_class"], "msg": "unknown or unserved class (served: esp)"},
        {"index": 2, "loc": ["readings", first], "msg": f"expected {W} values, got 2"},
        {"index": 3, "loc": ["readings", "warp"], "msg": "not a channel or setting of esp"},
        {"index": 4, "loc": ["readings", first], "msg": "channel required for class esp"},
    ]


def test_nothing_scored_is_an_error_with_every_items_reason() -> None:
    items = batch.decode_json(json.dumps({"items": [item("p1", cls="rod")]}).encode())
    answers, _ = run_batch(items, served())
    for encode in (batch.encode_json, batch.encode_arrow):
        with pytest.raises(NothingScored) as e:
            encode(items, answers)
        assert e.value.errors == [
            {"index": 0, "loc": ["pump_class"], "msg": "unknown or unserved class (served: esp)"}
        ]


def test_in_shadow_mode_the_champion_answers_every_pump() -> None:
    raw = [item(f"p{i}", i) for i in range(10)]
    items = batch.decode_json(json.dumps({"items": raw}).encode())
    answers, groups = run_batch(items, served(shadow=True))
    assert [(g.arm, g.rows) for g in groups] == [(Arm.CHAMPION, list(range(10)))]
    assert {r["model_version"] for r in batch.encode_json(items, answers)["results"]} == {"1"}


def test_a_single_request_is_a_batch_of_one_and_answers_as_in_a_batch() -> None:
    raw = [item(f"p{i}", i) for i in range(6)]
    classes = served(health=HEALTH)
    in_batch = batch.decode_json(json.dumps({"items": raw}).encode())
    answers, _ = run_batch(in_batch, classes)
    together = batch.encode_json(in_batch, answers)["results"]
    for i, r in enumerate(raw):
        one = batch.one(ScoreRequest.model_validate(r))
        single_answers, _ = run_batch(one, classes)
        assert batch.result(one, single_answers, 0) == together[i]
    assert all(r["anomaly_version"] == "7" for r in together)
    assert all(isinstance(r["health_score"], float) for r in together)


def test_a_single_request_that_cannot_be_scored_has_no_answer_but_its_error() -> None:
    one = batch.one(ScoreRequest.model_validate(item("p1", cls="rod")))
    answers, groups = run_batch(one, served())
    assert groups == [] and batch.result(one, answers, 0) is None
    assert one.errors == {0: (["pump_class"], "unknown or unserved class (served: esp)")}


class FakeLog:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.tables: list[Any] = []

    def extend(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def extend_table(self, table: Any) -> None:
        self.tables.append(table)


def logged(n: int, classes: dict[str, ServedClass]) -> tuple[list[dict[str, Any]], Any]:
    raw = [item(f"p{i}", i) for i in range(n)]
    items = batch.decode_json(json.dumps({"items": raw}).encode())
    groups = batch.group(items, classes, SALT)
    columns = []
    for g in groups:
        scores = batch.score(g)
        health = batch.health_columns(g.served.health, scores, len(g.rows))
        columns.append((g, prediction_log.log_columns(g, items, scores, health, 1.5, 10**18)))
    return [c for _, c in columns], items


def test_log_rows_are_prediction_records_however_they_reach_the_log() -> None:
    columns, _ = logged(6, served(health=HEALTH))
    small, big = FakeLog(), FakeLog()
    for c in columns:
        k = len(c["pump_id"])
        prediction_log.write(small, c, k)  # below TABLE_ROWS: rows, tabled at flush
        big.extend_table(records.to_table(c, k))  # what a big group does at once
    assert len(small.rows) == 6 and not small.tables
    as_rows = records.rows_to_table(small.rows)
    as_table = pa.concat_tables(big.tables)
    assert as_rows.equals(as_table)
    assert as_rows.schema == records.arrow_schema(["in_motor_temp", "in_flow"])
    got = {r["pump_id"]: r for r in as_rows.to_pylist()}
    assert set(got) == {f"p{i}" for i in range(6)}
    for r in got.values():
        assert r["latency_ms"] == 1.5 and r["anomaly_version"] == "7"
        assert r["model_version"] == {"champion": "1", "challenger": "2"}[r["arm"]]
        assert r["shadow_version"] is None and r["alert"] is None
    ids = [r["request_id"] for r in as_rows.to_pylist()]
    assert len(set(ids)) == 6


def test_a_group_of_many_goes_to_the_log_as_one_table() -> None:
    n = prediction_log.TABLE_ROWS
    classes = served(shadow=True)  # one group: every pump on the champion
    (c,), _ = logged(n, classes)
    log = FakeLog()
    prediction_log.write(log, c, n)
    assert not log.rows and [t.num_rows for t in log.tables] == [n]


def test_an_all_null_channel_is_logged_as_null_not_nan() -> None:
    raw = item("p1")
    raw["readings"]["flow"] = [None] * W
    items = batch.decode_json(json.dumps({"items": [raw]}).encode())
    (g,) = batch.group(items, served(), SALT)
    scores = batch.score(g)
    c = prediction_log.log_columns(g, items, scores, batch.health_columns(None, scores, 1), 1.0)
    assert records.to_table(c, 1).column("in_flow").to_pylist() == [None]


def test_shadow_scores_are_the_challengers_beside_the_champions() -> None:
    classes = served(shadow=True)
    (c,), items = logged(4, classes)
    groups = batch.group(items, classes, SALT)
    challenger = classes["esp"].shadow_model()
    assert challenger is not None
    log = FakeLog()
    prediction_log.write_with_shadow(log, c, challenger, groups[0], items)
    want = score_windows(groups[0].windows, challenger.spec, challenger.run).rul
    assert [r["shadow_version"] for r in log.rows] == ["2"] * 4
    assert np.allclose([r["shadow_rul_hours"] for r in log.rows], want.rul_hours)
    assert [r["model_version"] for r in log.rows] == ["1"] * 4


def test_a_challenger_that_cannot_shadow_leaves_the_rows_logged_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    classes = served(shadow=True)
    other = ServedModel("2", spec(("motor_temp", "flow", "vibration")), rul_model(0.0))
    classes["esp"].arms[Arm.CHALLENGER] = other  # reads a channel these requests lack
    (c,), items = logged(3, classes)
    groups = batch.group(items, classes, SALT)
    log = FakeLog()
    with caplog.at_level(logging.WARNING, logger="serve_apps.prediction_log"):
        prediction_log.write_with_shadow(log, c, other, groups[0], items)
    assert len(log.rows) == 3 and all(r.get("shadow_version") is None for r in log.rows)
    assert "shadow scoring of 3 windows failed" in caplog.text


def test_the_scoring_path_and_the_model_set_need_no_ray_mlflow_or_http() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "for m in ('ray', 'mlflow', 'fastapi', 'starlette'): sys.modules[m] = None\n"
        "import serve_apps.batch, serve_apps.model_set, serve_apps.prediction_log\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nannyml')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_shortcut_for_plain_windows_agrees_with_the_one_validation() -> None:
    """batch.plainly_fine lets the usual window skip window_problems: it may only say
    "fine" where window_problems finds nothing, and says it for the usual window."""
    from pumpfleet.readings import window_problems

    s = spec()
    rng = np.random.default_rng(0)
    raw = rng.normal(80, 30, (4000, W, 2))
    holes = rng.random(raw.shape)
    raw[holes < 0.05] = np.nan
    raw[holes > 0.995] = np.inf
    raw[(holes > 0.98) & (holes <= 0.985)] = 9999.0
    raw[:20] = 80.0  # plain windows
    fine = [batch.plainly_fine(w[None], s) for w in raw]
    problems = window_problems(raw, s)
    assert all(p is None for p, f in zip(problems, fine, strict=True) if f)
    assert (
        all(fine[:20])
        and not all(fine)
        and any(p is None and not f for p, f in zip(problems, fine, strict=True))
    )
