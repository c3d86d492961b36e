"""Feature snapshots: labelled windows per pump class, with the feature spec per class.

Layout of ``<features>/<snapshot_id>/`` (a folder or an ``s3://`` prefix):
``manifest.json`` and the data of the run that wrote it, under a prefix of that run's own
(``run-<time>-<random>/windows/pump_class=<c>/*.parquet``, ``.../quarantine/*.parquet``).
The manifest is written last and names the run's prefix and every file in it: a reader
trusts the manifest alone, so it never sees a half-written snapshot, on local disk or on
object storage (which has no rename), and a run that died or raced another leaves files
no manifest names. ``LATEST`` names the snapshot published last.

The id is a hash of what made the windows (:func:`snapshot_id`): the input files'
content digests, the ingest settings and the feature code, so ingesting the same input
with the same code again finds the snapshot already there, and any change makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pumpfleet import storage
from pumpfleet.errors import DataError, InputError
from pumpfleet.features import FeatureSpec, select_channels

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATEST = "LATEST"
RUN_PREFIX = "run-"
# A run prefix no manifest names, with nothing written for this long, is a dead run's.
STALE_AFTER_S = 3600.0


def snapshot_id(inputs: Mapping[str, str], config: Mapping[str, Any], code: str) -> str:
    """The id of the snapshot made from ``inputs`` (each input file's path in the dataset
    and its content digest), with ``config`` (the ingest settings and fleet schema) by
    the feature code whose hash is ``code``."""
    body = json.dumps(
        {"inputs": sorted(inputs.items()), "config": config, "code": code}, sort_keys=True
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def new_run(snapshot_root: str) -> str:
    """A fresh prefix under a snapshot's folder for one run to write its data into."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return storage.join(snapshot_root, f"{RUN_PREFIX}{stamp}-{secrets.token_hex(4)}")


def publish(run_uri: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Make the data under ``run_uri`` (from :func:`new_run`) the snapshot: its manifest,
    naming that prefix and each file in it, is written last, in one PUT (or rename).
    Dead runs' prefixes (no manifest names them, idle for an hour) are removed."""
    root, _, run = run_uri.rstrip("/").rpartition("/")
    files = storage.list_files(run_uri)
    manifest = {**manifest, "data": run, "files": sorted(storage.relative(run_uri, files))}
    storage.write_json(storage.join(root, MANIFEST), manifest)
    for other in storage.folders(root):
        stale = storage.join(root, other)
        if (
            other.startswith(RUN_PREFIX)
            and other != run
            and storage.idle_seconds(stale) > STALE_AFTER_S
        ):
            log.info("removing %s, the data of a run that never published", stale)
            storage.delete(stale)
    return manifest


@dataclass(frozen=True)
class Snapshot:
    root: str
    id: str
    manifest: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return sorted(self.manifest["specs"])

    @property
    def data(self) -> str:
        """Where the snapshot's files are (the run prefix its manifest names)."""
        run = self.manifest.get("data")
        return storage.join(self.root, run) if run else self.root

    def files(self, part: str) -> list[str]:
        """The files of ``part`` (e.g. ``windows/pump_class=esp``), as paths in the
        snapshot's filesystem: those the manifest names (a snapshot written before
        manifests named their files: those in the folder)."""
        named = self.manifest.get("files")
        if named is None:
            return storage.list_files(storage.join(self.data, part), ".parquet")
        _, base = storage.resolve(self.data)
        prefix = f"{part.rstrip('/')}/"
        return [f"{base}/{f}" for f in named if f.startswith(prefix) and f.endswith(".parquet")]

    def spec(self, pump_class: str) -> FeatureSpec:
        try:
            return FeatureSpec.model_validate(self.manifest["specs"][pump_class])
        except KeyError:
            raise DataError(f"snapshot {self.id} has no class {pump_class!r}") from None

    def load(
        self, pump_class: str, split: str, spec: FeatureSpec | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Raw windows of one class and split ``[N, W, C + S]`` (the inputs of ``spec``,
        by default the snapshot's own: a registered model's spec may differ) and their
        labels and keys as arrays."""
        import pyarrow.dataset as pads

        from pumpfleet.windows import windows_to_numpy

        own = self.spec(pump_class)
        spec = spec or own
        if spec.window != own.window:
            raise DataError(
                f"snapshot {self.id} has {own.window}-step windows, the model wants {spec.window}"
            )
        fs, _ = storage.resolve(self.data)
        files = self.files(f"windows/pump_class={pump_class}")
        if not files:
            raise DataError(f"snapshot {self.id} has no windows of class {pump_class!r}")
        table = pads.dataset(files, filesystem=fs, format="parquet").to_table(
            filter=pads.field("split") == split
        )
        table = table.sort_by([("pump_id", "ascending"), ("end_time", "ascending")])
        layout = self.manifest["channels"]
        raw = select_channels(windows_to_numpy(table, spec.window, len(layout)), spec, layout)
        cols = {
            name: table.column(name).to_numpy(zero_copy_only=False)
            for name in ("pump_id", "site", "end_time", "rul_hours", "failure_within_horizon")
        }
        return raw, cols


def open_snapshot(features_root: str, snapshot: str = "latest") -> Snapshot:
    """Open a snapshot by id, or the newest one written under ``features_root``."""
    if snapshot == "latest":
        latest = storage.join(features_root, LATEST)
        if not storage.exists(latest):
            raise InputError(f"no feature snapshot under {features_root}; run `pumpfleet ingest`")
        snapshot = storage.read_bytes(latest).decode().strip()
    root = storage.join(features_root, snapshot)
    manifest_uri = storage.join(root, MANIFEST)
    if not storage.exists(manifest_uri):
        raise InputError(f"no feature snapshot {snapshot!r} under {features_root}")
    return Snapshot(root=root, id=snapshot, manifest=storage.read_json(manifest_uri))
