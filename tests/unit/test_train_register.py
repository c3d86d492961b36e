"""When a class's registration starts: after the last of its trials ends, whether it
completed or failed, once per class, with only the completed trials; a copy pickled
with the Tune experiment starts nothing."""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.experiment import Trial

from ray_jobs.train_register import RegisterWhenDone


def _trial(cls: str, n: int) -> Trial:
    return Trial("x", config={"pump_class": cls}, trial_id=f"t_{cls}_{n:05d}", stub=True)


def _callback(expected: dict[str, int]) -> tuple[RegisterWhenDone, list[tuple[str, list[str]]]]:
    started: list[tuple[str, list[str]]] = []

    def start(cls: str, completed: list[Trial]) -> Any:
        started.append((cls, [t.trial_id for t in completed]))
        return f"ref-{cls}"

    return RegisterWhenDone(expected, start), started


def test_a_class_starts_when_its_last_trial_ends_not_before() -> None:
    cb, started = _callback({"esp": 2, "rod": 1})
    esp0, esp1, rod0 = _trial("esp", 0), _trial("esp", 1), _trial("rod", 0)
    cb.on_trial_complete(0, [], esp1)
    assert started == []
    cb.on_trial_complete(0, [], rod0)
    assert started == [("rod", ["t_rod_00000"])]
    cb.on_trial_complete(0, [], esp0)
    assert started == [("rod", ["t_rod_00000"]), ("esp", ["t_esp_00000", "t_esp_00001"])]
    assert cb.tasks == {"rod": "ref-rod", "esp": "ref-esp"}


def test_failed_trials_count_as_ended_but_are_not_candidates() -> None:
    cb, started = _callback({"esp": 3})
    cb.on_trial_error(0, [], _trial("esp", 0))
    cb.on_trial_complete(0, [], _trial("esp", 2))
    assert started == []
    cb.on_trial_error(0, [], _trial("esp", 1))
    assert started == [("esp", ["t_esp_00002"])]


def test_a_class_starts_once_and_a_repeated_event_is_not_a_new_trial() -> None:
    cb, started = _callback({"esp": 2})
    t = _trial("esp", 0)
    cb.on_trial_complete(0, [], t)
    cb.on_trial_complete(0, [], t)
    assert started == []
    cb.on_trial_complete(0, [], _trial("esp", 1))
    cb.on_trial_complete(0, [], _trial("esp", 1))
    assert len(started) == 1


def test_a_pickled_copy_starts_nothing() -> None:
    cb, started = _callback({"esp": 1})
    copy = pickle.loads(pickle.dumps(cb))
    copy.on_trial_complete(0, [], _trial("esp", 0))
    assert started == [] and copy.tasks == {}
