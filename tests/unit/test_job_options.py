"""Each job's options are defined once: what the CLI parses, what `python -m ray_jobs.<job>`
parses and what a job submission writes back are the same options."""

from __future__ import annotations

import argparse
import shlex

import pytest

from pumpfleet.errors import InputError
from pumpfleet.job_options import (
    RETRAIN_ENTRYPOINT,
    RetrainOptions,
    add_ingest_args,
    add_retrain_args,
    window_config,
)
from pumpfleet.windows import WindowConfig
from pumpfleet_cli.main import build_parser


def _retrain_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_retrain_args(p)
    return p


EVERY_OPTION = RetrainOptions(
    classes=["esp", "rod pump"],
    reason="drift on esp; 'quoted' $HOME",
    source="s3://fleet/data",
    config="space.yaml",
    epochs=3,
    seed=11,
    promote=True,
    no_health=True,
    ab_weight=0.25,
    shadow=True,
)


def test_every_retrain_option_survives_the_submitted_command_line() -> None:
    entrypoint = EVERY_OPTION.entrypoint()
    argv = shlex.split(entrypoint)
    assert " ".join(argv[:3]) == RETRAIN_ENTRYPOINT
    parsed = RetrainOptions.from_args(_retrain_parser().parse_args(argv[3:]))
    assert parsed == EVERY_OPTION
    # and no field is left at its default by accident
    assert all(getattr(parsed, f) != d.default for f, d in RetrainOptions.model_fields.items())


def test_defaults_round_trip_to_a_short_command_line() -> None:
    assert RetrainOptions().to_argv() == ["--reason", "requested"]
    parsed = RetrainOptions.from_args(_retrain_parser().parse_args([]))
    assert parsed == RetrainOptions()


def test_the_cli_and_the_job_parse_retrain_flags_alike() -> None:
    argv = EVERY_OPTION.to_argv()
    cli = build_parser().parse_args(["retrain", *argv])
    assert RetrainOptions.from_args(cli) == RetrainOptions.from_args(
        _retrain_parser().parse_args(argv)
    )


def test_bad_retrain_options_name_the_field() -> None:
    with pytest.raises(InputError, match="empty class name"):
        RetrainOptions.from_args(_retrain_parser().parse_args(["--classes", ""]))
    ns = _retrain_parser().parse_args([])
    ns.ab_weight = 1.5
    with pytest.raises(InputError, match="ab_weight"):
        RetrainOptions.from_args(ns)


def test_ingest_defaults_are_the_window_config_defaults() -> None:
    p = argparse.ArgumentParser()
    add_ingest_args(p)
    assert window_config(p.parse_args([])) == WindowConfig()
    cli = build_parser().parse_args(["ingest"])
    assert window_config(cli) == WindowConfig()
    custom = window_config(p.parse_args(["--window", "50", "--stride", "2", "--no-regimes"]))
    assert (custom.window, custom.stride, custom.regimes) == (50, 2, False)
