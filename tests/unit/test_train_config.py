"""The training job's inputs, checked before any Ray or training: the search space as
data, its config file, and an MLflow server that does not answer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from pumpfleet.errors import InputError, RegistryError
from pumpfleet.registry import Registry
from pumpfleet.search_space import Asha, SearchSpace, config_hash, train_config, trial_seed
from pumpfleet_cli.main import main as cli_main
from tests.conftest import free_port


def test_the_grid_is_the_product_of_its_lists() -> None:
    space = SearchSpace(kind=["cnn", "gru"], lr=[1e-2, 3e-3], hidden=[16, 32], samples=2)
    assert space.trials_per_class == 2 * 2 * 2 * 2
    grid = space.param_space(["esp", "rod"])
    assert grid["pump_class"] == {"grid_search": ["esp", "rod"]}
    assert grid["kind"] == {"grid_search": ["cnn", "gru"]}
    assert grid["sample"] == {"grid_search": [0, 1]}
    assert (grid["epochs"], grid["metric"]) == (8, "rmse")
    assert trial_seed({"seed": 3, "sample": 1}) == 1003


def test_seed_ensembles_and_early_stopping_are_options_of_the_space() -> None:
    space = SearchSpace(kind=["tcn", "gbm"], members=[1, 3], patience=4, restore_best=True)
    assert space.trials_per_class == 2 * 2 * 2  # kinds x members x the two default lrs
    grid = space.param_space(["esp"])
    assert grid["members"] == {"grid_search": [1, 3]}
    model, cfg = train_config(
        {k: v["grid_search"][-1] if isinstance(v, dict) else v for k, v in grid.items()}
    )
    assert (model.kind, model.members) == ("gbm", 3)
    assert (cfg.patience, cfg.restore_best, cfg.lr) == (4, True, 1e-2)
    plain = SearchSpace().param_space(["esp"])
    assert (
        "patience" not in plain
        and train_config(
            {k: v["grid_search"][0] if isinstance(v, dict) else v for k, v in plain.items()}
        )[1].patience
        is None
    )


def test_bad_search_spaces_are_refused_naming_the_value() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        SearchSpace(lr=[0.01, -1.0])
    with pytest.raises(ValidationError, match="at least 1 item"):
        SearchSpace(hidden=[])
    with pytest.raises(ValidationError, match=r"model \{.*'kind': 'lstm'"):
        SearchSpace(kind=["lstm"])
    with pytest.raises(ValidationError, match="not a multiple of heads"):
        SearchSpace(kind=["transformer"], hidden=[30])
    with pytest.raises(ValidationError, match="unknown model field 'layers_x'"):
        SearchSpace(architecture={"layers_x": [1]})
    with pytest.raises(ValidationError, match="metric must be rmse, mae or phm08"):
        SearchSpace(metric="accuracy")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SearchSpace.model_validate({"learning_rate": [0.1]})
    with pytest.raises(ValidationError, match="greater than 1"):
        Asha(reduction_factor=1)


def test_a_config_file_is_the_search_space(tmp_path: Path) -> None:
    good = tmp_path / "space.yaml"
    good.write_text("kind: [cnn]\nlr: [0.01, 0.003]\nepochs: 5\nasha: {grace_period: 1}\n")
    space = SearchSpace.from_file(str(good), seed=4)
    assert (space.lr, space.epochs, space.seed, space.asha.grace_period) == (
        [0.01, 0.003],
        5,
        4,
        1,
    )
    assert config_hash(space.model_dump()) == config_hash(space.model_dump())
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.01, 2.0]\n")
    with pytest.raises(InputError, match=r"--config .*bad.yaml: lr\.1: .*less than 1"):
        SearchSpace.from_file(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="expected a mapping"):
        SearchSpace.from_file(str(bad))
    with pytest.raises(InputError, match="No such file"):
        SearchSpace.from_file(str(tmp_path / "missing.yaml"))


def test_cli_refuses_a_bad_space_in_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden: [2]\n")
    assert cli_main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden.0" in err[0] and "greater than or equal to 4" in err[0]


def test_an_unreachable_mlflow_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RegistryError, match=rf"MLflow at {url} is unreachable"):
        Registry(url).ping()
    assert time.monotonic() - started < 30


def test_the_example_search_space_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "search.yaml"
    space = SearchSpace.from_file(str(example))
    assert space.trials_per_class == 2 and space.asha.grace_period == 2
