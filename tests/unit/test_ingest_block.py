"""The vectorised ingest core (``pumpfleet.ingest_block``, ``block_stats``,
``block_windows``) against the reference it replaced (``pumpfleet.ingest_reference``:
pandas, one pump at a time), on a fleet with every fault kind injected and rows with
missing keys or an unknown class: the same windows and labels bit for bit, the same rows
per file and reason, the same quarantined rows, statistics and regime statistics, however
the pumps are cut into blocks and whatever order their rows come in. And the streaming
single-process ingest against the plain pandas one (``benchmarks.ingest_single``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.ingest_check import (
    compare,
    different_counts,
    differing_columns,
    faulted_fleet,
    same_specs,
)
from benchmarks.ingest_single import single_process
from pumpfleet import block_stats
from pumpfleet import ingest_parts as new
from pumpfleet import ingest_reference as ref
from pumpfleet.feature_specs import class_regime_statistics, fit_class_regimes
from pumpfleet.features import nearest_regime
from pumpfleet.ingest_block import spikes_in_pumps, stuck_in_pumps
from pumpfleet.ingest_stream import file_blocks, run_ingest_stream
from pumpfleet.ingestion import IngestPlan, failures, plan_ingest, split_pumps
from pumpfleet.snapshot import open_snapshot
from pumpfleet.validation import spikes, stuck
from pumpfleet.windows import WindowConfig


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 pumps in files of a few pumps each, every fault kind injected."""
    path = tmp_path_factory.mktemp("faulted") / "fleet"
    return faulted_fleet(path, pumps=16, days=12, seed=3, batch_rows=1500)


def _readings(plan: IngestPlan) -> pd.DataFrame:
    """As Ray Data reads them, with rows no simulator writes: missing keys, an unknown
    class, a value beyond range."""
    frames = []
    for f in plan.files:
        t = pq.read_table(f).to_pandas()
        frames.append(t.assign(path=f, pump_class=Path(f).parent.name.split("=", 1)[1]))
    df = pd.concat(frames, ignore_index=True)
    df.loc[5, "site"] = None
    df.loc[7, "pump_class"] = "submarine"
    df.loc[9, "timestamp"] = pd.NaT
    df.loc[11, "motor_temp"] = 1e6
    df.loc[13, "pump_id"] = None
    return df


def _table(parts: pa.Table, column: str) -> pd.DataFrame:
    tables = new.from_ipc(parts.column(column))
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


def test_blocks_give_what_the_per_pump_reference_gives(fleet: Path, tmp_path: Path) -> None:
    # Short labels and a long time holdout, so that "future" windows are labelled too.
    cfg = WindowConfig(stride=3, rul_cap_hours=24, horizon_hours=12, future_fraction=0.3)
    plan = plan_ingest(str(fleet), str(tmp_path / "features"), cfg)
    df = _readings(plan)
    expected = pa.concat_tables(
        ref.pump_parts(rows, plan.fleet, plan.files)
        for _, rows in df.groupby("pump_id", dropna=False)
    )
    # Two blocks of whole pumps, one of them with its rows shuffled.
    first = df["pump_id"].astype(str) < "esp"
    blocks = [df[first].sample(frac=1, random_state=1), df[~first]]
    got = pa.concat_tables(
        new.block_parts(pa.Table.from_pandas(b, preserve_index=False), plan.fleet, plan.files)
        for b in blocks
    )
    # Rows per file and reason.
    per = ["path", "reason"]
    a = _table(expected, "counts").groupby(per, dropna=False)["rows"].sum()
    b = _table(got, "counts").groupby(per, dropna=False)["rows"].sum()
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())
    # The quarantined rows, each with its reason and file.
    qa, qb = ref.quarantined_rows(expected).to_pandas(), new.quarantined_rows(got).to_pandas()
    keys = ["pump_id", "timestamp", "source_file", "quarantine_reason"]
    pd.testing.assert_frame_equal(
        _sorted(qa[keys], keys), _sorted(qb[keys], keys), check_dtype=False
    )
    reasons = qa["quarantine_reason"].str.split(":").str[0]
    assert {"missing", "unknown_class", "out_of_range", "no_readings"} <= set(reasons)
    assert {"duplicate_timestamp", "stuck", "spike"} <= set(reasons)
    # Each (pump, class)'s statistics and settings sample (in time order).
    on = ["pump_id", "pump_class"]
    sa, sb = _sorted(_table(expected, "stats"), on), _sorted(_table(got, "stats"), on)
    pd.testing.assert_frame_equal(sa, sb[sa.columns], check_dtype=False, rtol=1e-12)
    pa_, pb = _sorted(_table(expected, "sample"), on), _sorted(_table(got, "sample"), on)
    pd.testing.assert_frame_equal(pa_, pb[pa_.columns], check_dtype=False, check_exact=True)
    # Windows and labels, bit for bit, with every split (the time cutoff too).
    pumps = split_pumps(plan, _table(got, "counts"), _table(got, "stats"))
    fails = failures(str(fleet))
    assert fails
    args = (fails, pumps.splits, plan.cfg, plan.layout, pumps.cutoff)
    wa, wb = ref.windows_of(expected, *args), new.windows_of(got, *args)
    assert wa.num_rows > 300 and wa.schema.equals(wb.schema)
    assert set(wa.column("split").to_pylist()) == {"train", "val", "holdout", "future"}
    assert differing_columns(wa, wb) == []
    # Per (pump, class, regime) statistics.
    fits = fit_class_regimes(_table(got, "sample"), pumps.splits, plan.fleet.settings)
    centres = {c: (f.center, f.scale) for c, f in fits.items()}
    assert centres
    regime_args = (centres, plan.fleet.channel_names, plan.fleet.settings)
    on = ["pump_id", "pump_class", "regime"]
    ra = _sorted(_table(ref.regime_statistics_of(expected, *regime_args), "regime_stats"), on)
    rb = _sorted(_table(new.regime_statistics_of(got, *regime_args), "regime_stats"), on)
    pd.testing.assert_frame_equal(ra, rb[ra.columns], check_dtype=False, rtol=1e-9)
    # Merged per class as feature_specs merges them, bit for bit.
    merged = block_stats.class_regime_statistics(rb, pumps.splits, plan.fleet.channel_names)
    expected_merge = class_regime_statistics(rb, pumps.splits, plan.fleet.channel_names)
    assert sorted(merged) == sorted(expected_merge)
    for cls, arrays in expected_merge.items():
        assert all(
            np.array_equal(x, y, equal_nan=True) for x, y in zip(arrays, merged[cls], strict=True)
        )


def test_neighbour_rules_stop_at_a_pump_boundary() -> None:
    """Stuck runs and spike medians of several pumps at once are each pump's own."""
    rng = np.random.default_rng(0)
    pumps = [rng.normal(50, 1, 40) for _ in range(3)]
    pumps[0][-4:] = 7.0  # a stuck run at the end of one pump ...
    pumps[1][:3] = 7.0  # ... and the start of the next: not one run of 7
    pumps[1][10] = 500.0
    pumps[2][[0, 1, 5]] = np.nan
    values = np.concatenate(pumps)
    owner = np.repeat(np.arange(3), 40)
    same = owner[1:] == owner[:-1]
    for after in (2, 3, 4, 5):
        expected = np.concatenate([stuck(v, after) for v in pumps])
        assert np.array_equal(stuck_in_pumps(values, same, after), expected)
    for ratio in (0.05, 0.5, 3.0):
        expected = np.concatenate([spikes(v, ratio) for v in pumps])
        assert np.array_equal(spikes_in_pumps(values, same, ratio), expected)


def test_spike_medians_where_the_bound_test_decides_and_where_it_cannot() -> None:
    """The bound test clears rows without their median: on noise, steps, spikes, values
    on the threshold, zeros, negative values and gaps, in pumps of 1 to 12 rows, the
    result is pandas' rolling median's, row for row."""
    rng = np.random.default_rng(7)
    pumps = []
    for i in range(400):
        v = rng.normal(50, rng.choice([0.1, 5, 40]), rng.integers(1, 13))
        kind = i % 8
        if kind == 1:
            v[rng.integers(len(v))] *= rng.choice([1.999999, 2.0, 2.000001, 3.0])
        elif kind == 2:
            v[rng.integers(len(v)) :] += 60  # a step
        elif kind == 3:
            v[rng.random(len(v)) < 0.3] = np.nan
        elif kind == 4:
            v -= 50  # around zero, either sign
        elif kind == 5:
            v[:] = rng.choice([0.0, 1.0, 2.0], len(v))  # exact ties and the threshold
        elif kind == 6:
            v = -np.abs(v)
        pumps.append(v)
    values = np.concatenate(pumps)
    owner = np.repeat(np.arange(len(pumps)), [len(v) for v in pumps])
    same = owner[1:] == owner[:-1]
    for ratio in (0.05, 0.5, 1.0, 3.0):
        expected = np.concatenate([spikes(v, ratio) for v in pumps])
        got = spikes_in_pumps(values, same, ratio)
        assert np.array_equal(got, expected)
        assert 0 < expected.sum() < len(values)


def test_regimes_found_once_per_run_of_settings_are_each_rows_own() -> None:
    """Runs of identical setpoints, a missing setting, zeros of either sign and noise:
    the regime of every row is :func:`nearest_regime`'s of that row."""
    rng = np.random.default_rng(5)
    center = np.array([[1000.0, 0.5], [2000.0, 1.0], [3000.0, 1.5]])
    scale = np.array([800.0, 0.4])
    runs = center[rng.integers(0, 3, 300)].repeat(rng.integers(1, 40, 300), axis=0)
    runs[rng.random(len(runs)) < 0.02] = np.nan
    runs[5:9] = [[0.0, -0.0], [-0.0, 0.0], [0.0, 0.0], [-0.0, -0.0]]
    noisy = runs + rng.normal(0, 300, runs.shape)
    for found in (runs, noisy, runs[:1], runs[:0]):
        expected = nearest_regime(found, center, scale)
        assert np.array_equal(block_stats._regimes(found, center, scale), expected)
    assert len(np.unique(nearest_regime(runs, center, scale))) == 4  # three and -1


def test_the_streaming_ingest_writes_what_the_pandas_one_does(fleet: Path, tmp_path: Path) -> None:
    cfg = WindowConfig()
    expected = single_process(fleet, tmp_path / "pandas", cfg)
    plan = plan_ingest(str(fleet), str(tmp_path / "features"), cfg)
    assert len(file_blocks(plan, block_rows=1000)) > 2  # several blocks, read in turn
    got = run_ingest_stream(str(fleet), str(tmp_path / "features"), cfg, block_rows=1000)
    assert different_counts(expected, got) == []
    assert got["rows_quarantined"] > 0 and len(got["quarantine_reasons"]) > 5
    assert sum(f["rows"] for f in got["per_file"].values()) == got["rows_in"]
    snap = open_snapshot(str(tmp_path / "features"))
    assert snap.id == got["snapshot_id"]
    check = compare(Path(snap.data) / "windows", tmp_path / "pandas" / "windows")
    assert check["same"] and check["windows"] > 100, check
    assert same_specs(expected["specs"], snap.manifest["specs"])
    quarantined = pd.read_parquet(f"{snap.data}/quarantine")
    assert len(quarantined) == got["rows_quarantined"]
    # The same files again: the snapshot is there already.
    again = run_ingest_stream(str(fleet), str(tmp_path / "features"), cfg)
    assert again["up_to_date"] and again["snapshot_id"] == got["snapshot_id"]
