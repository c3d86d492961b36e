"""Code and environment lineage recorded with every run, and the hash of the code that
shapes features, which is part of every snapshot's id."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from pumpfleet import __version__

if TYPE_CHECKING:
    from pumpfleet.settings import Settings

_LIBRARIES = ("torch", "ray", "mlflow", "onnx", "onnxruntime", "nannyml", "numpy", "pyarrow")

# The modules whose source decides what a snapshot holds: validation and its quarantine
# reasons, operating regimes, windows, splits and labels, the feature spec and its
# statistics, the per-pump pass and the fleet schema's ranges. A change to any of them
# makes a new snapshot id, so a stale snapshot is never reused.
FEATURE_CODE = (
    "pumpfleet.validation",
    "pumpfleet.regimes",
    "pumpfleet.windows",
    "pumpfleet.features",
    "pumpfleet.feature_specs",
    "pumpfleet.ingest_parts",
    "pumpfleet.ingest_block",
    "pumpfleet.block_stats",
    "pumpfleet.block_windows",
    "pumpfleet.schema",
)

# Where a job learns its commit when it runs without a checkout (Settings.git_commit).
COMMIT_ENV = "PUMPFLEET_GIT_COMMIT"


def feature_code_hash(modules: Sequence[str] | None = None) -> str:
    """A hash of the source of ``modules`` (by default :data:`FEATURE_CODE`), read
    from the files the interpreter imports them from."""
    h = hashlib.sha256()
    for name in modules if modules is not None else FEATURE_CODE:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ImportError(f"feature code module {name} not found")
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_tags(settings: Settings | None = None) -> dict[str, str]:
    """Git commit (the submitter's or the image's, ``PUMPFLEET_GIT_COMMIT``, else the
    checkout's, with its dirty flag), package and library versions."""
    if settings is None:
        from pumpfleet.settings import get_settings

        settings = get_settings()
    tags = {"pumpfleet.version": __version__}
    if settings.git_commit:
        tags["git.commit"] = settings.git_commit
    elif commit := _git("rev-parse", "HEAD"):
        tags["git.commit"] = commit
        tags["git.dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    for lib in _LIBRARIES:
        try:
            tags[f"lib.{lib}"] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return tags


def submission_env(settings: Settings | None = None) -> dict[str, str]:
    """What a submitter puts in a job's runtime environment so that the job records the
    commit of the code it runs (its working dir carries no ``.git``)."""
    commit = code_tags(settings).get("git.commit")
    return {COMMIT_ENV: commit} if commit else {}


def differences(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """How the code and libraries here differ from a run's tags: one line each for the
    commit and every library version recorded with it (none if they agree)."""
    out = []
    was, now = recorded.get("git.commit"), current.get("git.commit")
    if was and was != now:
        out.append(f"git commit {now or 'unknown'} here, the run had {was}")
    for key in sorted(k for k in recorded if k.startswith("lib.")):
        if recorded[key] != current.get(key):
            lib = key.removeprefix("lib.")
            out.append(f"{lib} {current.get(key, 'missing')} here, the run had {recorded[key]}")
    return out
