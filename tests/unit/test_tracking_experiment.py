"""An experiment asked for by two processes at once: both find none, one creates it, and
the other's create fails; that one returns the experiment the first made."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumpfleet.registry import Registry


def test_a_create_that_lost_the_race_returns_the_winners_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ours, theirs = Registry(uri), Registry(uri)
    looked = ours.client.get_experiment_by_name
    calls: list[str] = []

    def first_finds_none(name: str) -> object:
        calls.append(name)
        if len(calls) == 1:  # the other process creates it between our look and create
            theirs.client.create_experiment(name)
            return None
        return looked(name)

    monkeypatch.setattr(ours.client, "get_experiment_by_name", first_finds_none)
    made = ours.experiment("pumpfleet-train")
    assert made == theirs.client.get_experiment_by_name("pumpfleet-train").experiment_id
    assert calls == ["pumpfleet-train", "pumpfleet-train"]
    assert len(theirs.client.search_experiments(filter_string="name = 'pumpfleet-train'")) == 1
