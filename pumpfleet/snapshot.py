"""Feature snapshots: labelled windows per pump class, with the feature spec per class.

Layout of ``<features>/<snapshot_id>/``: ``windows/pump_class=<c>/*.parquet``,
``specs/<c>.json``, ``quarantine/*.parquet`` and ``manifest.json``, written last.
The id is a content hash of the input files, the window config and the code version, so
ingesting the same input again finds the snapshot already there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from pumpfleet import __version__, storage
from pumpfleet.errors import DataError, InputError
from pumpfleet.features import FeatureSpec, select_channels

MANIFEST = "manifest.json"
LATEST = "LATEST"


def snapshot_id(inputs: list[tuple[str, int]], config: dict[str, Any]) -> str:
    body = json.dumps(
        {"inputs": sorted(inputs), "config": config, "code": __version__}, sort_keys=True
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    root: str
    id: str
    manifest: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return sorted(self.manifest["specs"])

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
        fs, path = storage.resolve(storage.join(self.root, "windows", f"pump_class={pump_class}"))
        table = pads.dataset(path, filesystem=fs, format="parquet").to_table(
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
