"""Adapters: public datasets mapped into the canonical fleet dataset layout."""

from pathlib import Path


def shared_data_dir() -> Path:
    """``../shared/data`` beside the project's checkout (where the public data lives)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"
