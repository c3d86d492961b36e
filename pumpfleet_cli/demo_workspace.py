"""The demo's workspace: each `pumpfleet demo` starts from an empty one.

An earlier run's state changes the story the demo tells: its champions, its prediction
log (the monitor then sees two runs' requests at once), its monitor watermark and its
alert cooldowns. A second `make demo` on the same workspace reported drift on a class the
demo never shifted and retrained nothing ("cooling down (23.5 h left)"). So the earlier
run is moved aside, to ``<workspace>.previous``, before the demo begins.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pumpfleet import devices, trust_repo
from pumpfleet.settings import Settings

log = logging.getLogger(__name__)

SUFFIX = ".previous"

# Top-level names that modules other than Settings write in a workspace: C-MAPSS and
# SKAB imports (pumpfleet_cli.commands), the monitor's state (pumpfleet.triggers,
# pumpfleet.scheduling), the front door's folder (serve_apps.front_door), the replicas'
# write-ahead files (serve_apps.durable_log), MLflow's artifacts (Settings.artifact_root).
WRITTEN_ELSEWHERE = frozenset({"datasets", "monitor", "serve", "wal", "mlartifacts"})


def _db_file(url: str) -> Path:
    """The file of a SQLite URL (any other URL as a path, which no workspace holds)."""
    return Path(url.removeprefix("sqlite:///"))


def own_names(settings: Settings) -> tuple[frozenset[str], tuple[str, ...]]:
    """What pumpfleet writes at the top of ``settings``' workspace (the demo, and the
    commands the docs run in its workspace after it): names, and name prefixes (SQLite's
    -wal and -shm files, the prediction logs' write-ahead and feedback folders)."""
    folders = (
        settings.data_dir,
        settings.features_dir,
        settings.bundles_dir,
        settings.predictions_dir,
        settings.reports_dir,
        settings.keys_dir,
        settings.tune_dir,
        trust_repo.folder(settings.home),
    )
    databases = (settings.tracking_uri, settings.fleet_db)
    names = WRITTEN_ELSEWHERE | {p.name for p in folders} | {devices.FILE}
    prefixes = (
        *(_db_file(db).name for db in databases),
        f"{settings.predictions_dir.name}-",
        f"staging-{settings.predictions_dir.name}",
    )
    return names, prefixes


def foreign(settings: Settings, folder: Path) -> list[str]:
    """The entries of ``folder`` that pumpfleet does not write, sorted: a folder with any
    (a ``PUMPFLEET_HOME`` of ``.`` or of a home folder) is never moved or replaced."""
    names, prefixes = own_names(settings)
    return sorted(
        p.name for p in folder.iterdir() if p.name not in names and not p.name.startswith(prefixes)
    )


def outside_stores(settings: Settings) -> list[str]:
    """The stores of ``settings`` that do not lie in its workspace folder (object
    storage, an MLflow server, a fleet database elsewhere), by the setting's name."""
    home = settings.home
    places: dict[str, str | Path] = {
        "data_uri": settings.data_uri,
        "features_uri": settings.features_uri,
        "predictions_uri": settings.predictions_uri,
        "reports_uri": settings.reports_uri,
        "bundles_uri": settings.bundles_uri,
        "mlflow_tracking_uri": _db_file(settings.tracking_uri),
        "fleet_db_url": _db_file(settings.fleet_db),
    }
    return [name for name, place in places.items() if not Path(place).is_relative_to(home)]


def set_aside(settings: Settings) -> Path | None:
    """Move the workspace an earlier run filled to ``<workspace>.previous`` (replacing the
    one there) and return where it went; None when there was nothing to move.

    Only a workspace that holds all of the demo's stores and nothing but what pumpfleet
    writes: where some store lies elsewhere (``outside_stores``), or the folder holds
    anything else (``foreign``), nothing is moved and a line says so."""
    home = settings.home
    if not home.is_dir() or not any(home.iterdir()):
        return None
    elsewhere = outside_stores(settings)
    if elsewhere:
        log.warning(
            "the workspace %s is not moved aside: %s lie outside it, so an earlier "
            "run's state there carries over into this one",
            home,
            ", ".join(elsewhere),
        )
        return None
    others = foreign(settings, home)
    if others:
        log.warning(
            "the workspace %s is not moved aside: it holds what pumpfleet did not write "
            "(%s), so an earlier run's state there carries over into this one",
            home,
            ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""),
        )
        return None
    previous = home.with_name(home.name + SUFFIX)
    if previous.is_symlink() or (
        previous.exists() and (not previous.is_dir() or foreign(settings, previous))
    ):
        log.warning(
            "the workspace %s is not moved aside: %s is not a workspace an earlier "
            "demo left, so it is not replaced; an earlier run's state carries over",
            home,
            previous,
        )
        return None
    if previous.exists():
        shutil.rmtree(previous)
    home.rename(previous)
    log.info(
        "an earlier run's workspace is now %s; this run starts from an empty %s",
        previous,
        home,
    )
    return previous
