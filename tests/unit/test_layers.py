"""The layer rules hold for every module, including the next one written: make lint's
import-linter contracts list the core modules the device may not import by name, so every
core module must be classified, device-side or cloud-only."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Core modules the edge agent may import: numpy, pydantic, onnxruntime and the standard
# library only (checked by the contract "The device agent: no Ray, torch, MLflow ...").
DEVICE_SIDE = {
    "pumpfleet.assignment",
    "pumpfleet.bundle",
    "pumpfleet.device_settings",
    "pumpfleet.errors",
    "pumpfleet.explain",
    "pumpfleet.features",
    "pumpfleet.health",
    "pumpfleet.jsontext",
    "pumpfleet.manifest",
    "pumpfleet.names",
    "pumpfleet.readings",
    "pumpfleet.records",
    "pumpfleet.runtime",
    "pumpfleet.schema",
    "pumpfleet.scoring",
    "pumpfleet.trust",
}


def core_modules() -> set[str]:
    out = set()
    for path in (ROOT / "pumpfleet").iterdir():
        if path.name.startswith("_") or path.name == "__pycache__":
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            out.add(f"pumpfleet.{path.stem}")
    return out


def device_contract() -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (found,) = [c for c in contracts if c["name"].startswith("The device agent imports only")]
    return dict(found)


def test_every_core_module_is_device_side_or_forbidden_to_the_device() -> None:
    forbidden = set(device_contract()["forbidden_modules"])
    modules = core_modules()
    unclassified = sorted(modules - forbidden - DEVICE_SIDE)
    assert not unclassified, (
        f"{unclassified}: add each to DEVICE_SIDE here (if edge_agent may import it) or to "
        "the forbidden_modules of pyproject.toml's contract 'The device agent imports only "
        "the core modules a device needs'"
    )
    both = sorted(forbidden & DEVICE_SIDE)
    assert not both, f"{both}: both allowed to and forbidden for the device"
    gone = sorted(m for m in forbidden if m.startswith("pumpfleet.") and m not in modules)
    assert not gone, f"{gone}: forbidden to the device but no longer in pumpfleet/"
