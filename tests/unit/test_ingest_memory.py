"""The single-process ingest's memory setting is scoped: Arrow allocates from the C heap
inside it, and its own pool is back after it, also when the ingest fails."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pumpfleet.ingest_memory import reused_memory


def test_arrow_allocates_from_the_c_heap_inside_and_its_pool_is_back_after() -> None:
    before = pa.default_memory_pool().backend_name
    with reused_memory():
        assert pa.default_memory_pool().backend_name == "system"
        table = pa.table({"x": pa.array(range(100_000), pa.int64())})
    assert pa.default_memory_pool().backend_name == before
    assert table.column("x")[99_999].as_py() == 99_999  # still readable after the block


def test_the_pool_is_back_after_an_error() -> None:
    before = pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError, match="boom"), reused_memory():
        raise RuntimeError("boom")
    assert pa.default_memory_pool().backend_name == before
