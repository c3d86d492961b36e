"""Names that reach the disk (bundle members, device ids, batch keys): plain file names,
never a path. One rule for every door."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# Letters, digits, "._-"; not starting with a dot (no ".", "..", hidden files), no
# separator, at most 128 characters.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def plain_name(name: str) -> str:
    """``name`` if it is a plain file name; else a ValueError saying why."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise ValueError(
            f"{shown} is not a plain file name (1-128 of A-Z a-z 0-9 . _ -, not starting "
            "with a dot)"
        )
    return name


PlainName = Annotated[str, AfterValidator(plain_name)]
