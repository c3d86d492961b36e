"""Code and environment lineage recorded with every run."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from pumpfleet import __version__

_LIBRARIES = ("torch", "ray", "mlflow", "onnx", "onnxruntime", "nannyml", "numpy", "pyarrow")


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


def code_tags() -> dict[str, str]:
    """Git commit and dirty flag (when run from a checkout), package and library versions."""
    tags = {"pumpfleet.version": __version__}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git.commit"] = commit
        tags["git.dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    for lib in _LIBRARIES:
        try:
            tags[f"lib.{lib}"] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return tags
