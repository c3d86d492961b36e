"""Paths that may be local folders or object-store URIs (``s3://``), through pyarrow.

S3 is configured as AWS tools are (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``: :class:`pumpfleet.settings.Settings`
fields), read when a filesystem is first needed, never at import. Paths inside a
filesystem are pyarrow's: absolute on local disk, ``bucket/key`` on S3.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpfleet import jsontext

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from pumpfleet.settings import Settings

S3 = "s3://"


def is_remote(uri: str | Path) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def absolute(uri: str | Path) -> str:
    """A URI unchanged, a local path made absolute (what another process can find)."""
    if is_remote(uri):
        return str(uri).rstrip("/")
    return str(Path(str(uri).removeprefix("file://")).expanduser().resolve())


def _s3_options(settings: Settings | None) -> tuple[str | None, ...]:
    if settings is None:
        from pumpfleet.settings import get_settings

        settings = get_settings()
    return (
        settings.aws_endpoint_url,
        settings.aws_access_key_id,
        settings.aws_secret_access_key,
        settings.aws_session_token,
        settings.aws_default_region,
    )


@lru_cache(maxsize=8)
def _s3(options: tuple[str | None, ...]) -> pafs.S3FileSystem:
    import pyarrow.fs as pafs

    endpoint, key, secret, token, region = options
    kwargs: dict[str, Any] = {}
    if endpoint:
        kwargs["endpoint_override"] = endpoint  # a scheme in it (http://) is honoured
    if key and secret:
        kwargs |= {"access_key": key, "secret_key": secret}
        if token:
            kwargs["session_token"] = token
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def s3_filesystem(settings: Settings | None = None, bucket: str | None = None) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem as ``settings`` (by default the process's) configure it;
    on AWS itself with no region set, in ``bucket``'s own region, as the AWS CLI finds it."""
    options = _s3_options(settings)
    endpoint, *_, region = options
    if bucket and not endpoint and not region:
        options = (*options[:4], _bucket_region(bucket))
    return _s3(options)


@lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    import pyarrow.fs as pafs

    try:
        return str(pafs.resolve_s3_region(bucket))
    except OSError:  # no network, no such bucket: the default region, and its error later
        return None


def s3_client(settings: Settings | None = None) -> Any:
    """A boto3 S3 client configured as :func:`s3_filesystem` (for what pyarrow does not
    expose: object ETags)."""
    import boto3

    endpoint, key, secret, token, region = _s3_options(settings)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=region,
    )


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it for a local path or a URI."""
    import pyarrow.fs as pafs

    text = str(uri)
    if text.startswith(S3):
        path = text.removeprefix(S3).rstrip("/")
        return s3_filesystem(bucket=path.split("/", 1)[0]), path
    if is_remote(text):
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path
    return pafs.LocalFileSystem(), absolute(text)


def join(uri: str | Path, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *parts])


def exists(uri: str | Path) -> bool:
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def list_files(uri: str | Path, suffix: str = "") -> list[str]:
    """Every file under ``uri`` (recursively) whose name ends with ``suffix``, sorted:
    paths inside its filesystem (see :func:`resolve`)."""
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def relative(uri: str | Path, paths: list[str]) -> list[str]:
    """``paths`` (inside the filesystem of ``uri``, under it) relative to ``uri``."""
    _, base = resolve(uri)
    return [p[len(base) :].lstrip("/") for p in paths]


def digests(uri: str | Path) -> dict[str, str]:
    """What every file under ``uri`` holds, by its path relative to ``uri``: the
    object's ETag on S3 (the store's checksum of what it received, listed with the keys,
    so nothing is read), else the sha256 of its bytes."""
    if str(uri).startswith(S3) and _has_boto3():
        return _etags(str(uri))
    fs, _ = resolve(uri)
    files = list_files(uri)
    out = {}
    for path, rel in zip(files, relative(uri, files), strict=True):
        h = hashlib.sha256()
        with fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out[rel] = f"sha256:{h.hexdigest()}"
    return out


def _has_boto3() -> bool:
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def _etags(uri: str) -> dict[str, str]:
    bucket, _, prefix = uri.removeprefix(S3).rstrip("/").partition("/")
    prefix = f"{prefix}/" if prefix else ""
    out = {}
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):  # a folder marker holds nothing
                out[obj["Key"][len(prefix) :]] = f"etag:{obj['ETag'].strip(chr(34))}"
    return out


def read_bytes(uri: str | Path) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return bytes(f.read())


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write a file whole: locally through a temporary name and a rename, so a reader
    never sees half of it; an object store makes a PUT (or a multipart upload, on its
    completion) visible whole by itself."""
    fs, path = resolve(uri)
    if is_remote(uri):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def write_once(uri: str | Path, data: bytes) -> bool:
    """Write a file whole unless it exists: True if this call wrote it, False if it was
    there (of two writers racing, exactly one wins). Locally through a temporary file and
    a hard link, which fails on an existing name; on S3 by a conditional PUT
    (``If-None-Match: *``)."""
    import os

    text = str(uri)
    if text.startswith(S3):
        from botocore.exceptions import ClientError

        bucket, _, key = text.removeprefix(S3).partition("/")
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                return False
            raise
        return True
    if is_remote(text):
        raise NotImplementedError(f"{text}: write-once needs a local path or s3://")
    path = Path(absolute(text))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if another writer got there first
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def read_json(uri: str | Path) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str | Path, obj: Any) -> None:
    write_bytes(uri, jsontext.dumps(obj, indent=2, sort_keys=True).encode())


def delete(uri: str | Path) -> None:
    """Remove a file or a folder (a prefix) with all it holds; nothing if neither."""
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def folders(uri: str | Path) -> list[str]:
    """The names of the folders (prefixes) right under ``uri``."""
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def idle_seconds(uri: str | Path) -> float:
    """Seconds since anything under ``uri`` was last written (inf if nothing is)."""
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    times = [i.mtime.timestamp() for i in infos if i.type == pafs.FileType.File and i.mtime]
    return time.time() - max(times) if times else float("inf")


# What a fleet dataset folder holds (see pumpfleet.schema).
DATASET_PARTS = ("readings", "events", "faults", "truth", "labels", "fleet.json")


def prepare_dataset(out: str, overwrite: bool) -> None:
    """Make ``out`` ready for a new fleet dataset: refuse to replace one unless
    ``overwrite``, and then remove every part of it, so nothing stale survives (a
    partition of a class the new data lacks, or another dataset's fleet.json)."""
    from pumpfleet.errors import InputError

    if list_files(join(out, "readings"), ".parquet") and not overwrite:
        raise InputError(f"{out} already holds a fleet dataset; pass --overwrite to replace it")
    for part in DATASET_PARTS:
        delete(join(out, part))
