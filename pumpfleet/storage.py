"""Paths that may be local folders or object-store URIs (``s3://``), through pyarrow."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpfleet import jsontext

if TYPE_CHECKING:
    import pyarrow.fs as pafs


def is_remote(uri: str | Path) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it for a local path or a URI."""
    import pyarrow.fs as pafs

    if is_remote(uri):
        fs, path = pafs.FileSystem.from_uri(str(uri))
        return fs, path
    return pafs.LocalFileSystem(), str(Path(str(uri).removeprefix("file://")).resolve())


def join(uri: str | Path, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *parts])


def exists(uri: str | Path) -> bool:
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def list_files(uri: str | Path, suffix: str = "") -> list[str]:
    """Every file under ``uri`` (recursively) whose name ends with ``suffix``, sorted."""
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def read_bytes(uri: str | Path) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return bytes(f.read())


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write a file whole: locally through a temporary name and a rename, so a reader
    never sees half of it; object stores make a PUT atomic themselves."""
    fs, path = resolve(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if is_remote(uri):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def read_json(uri: str | Path) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str | Path, obj: Any) -> None:
    write_bytes(uri, jsontext.dumps(obj, indent=2, sort_keys=True).encode())


# What a fleet dataset folder holds (see pumpfleet.schema).
DATASET_PARTS = ("readings", "events", "faults", "truth", "labels", "fleet.json")


def prepare_dataset(out: str, overwrite: bool) -> None:
    """Make ``out`` ready for a new fleet dataset: refuse to replace one unless
    ``overwrite``, and then remove every part of it, so nothing stale survives (a
    partition of a class the new data lacks, or another dataset's fleet.json)."""
    import pyarrow.fs as pafs

    from pumpfleet.errors import InputError

    if list_files(join(out, "readings"), ".parquet") and not overwrite:
        raise InputError(f"{out} already holds a fleet dataset; pass --overwrite to replace it")
    for part in DATASET_PARTS:
        fs, path = resolve(join(out, part))
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            fs.delete_file(path)
