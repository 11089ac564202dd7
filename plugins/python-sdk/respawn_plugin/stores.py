"""Named stores, granted `read` or `write` (`write` implies read) by the step's `stores` grant, optionally under
a key prefix. Each call raises a `Failure`: `denied` outside the grant (and for writes in the plan phase),
`not-found` for a missing object, `unavailable` for transient store errors.
"""

from __future__ import annotations

import builtins
from typing import Iterator, List, Optional

from . import _backend
from ._types import CopyResult, Failure, ObjectMeta

#: The most `get` returns; move bigger objects with `copy`, or read them with `get_range` / `read_chunks`.
MAX_GET_BYTES = 64 << 20
#: The most one `get_range` returns.
MAX_GET_RANGE_BYTES = 16 << 20


def get(store: str, key: str) -> bytes:
    """The whole object (at most 64 MiB)."""
    return _backend.current().store_get(store, key)


def get_range(store: str, key: str, offset: int, length: int) -> bytes:
    """`length` bytes from `offset`: fewer at the end of the object, none past it. `length` is at most 16 MiB."""
    return _backend.current().store_get_range(store, key, int(offset), int(length))


def read_chunks(store: str, key: str, chunk: int = 8 << 20) -> Iterator[bytes]:
    """The object in chunks of `chunk` bytes, for one too big to hold whole (`head`, then `get_range`)."""
    meta = head(store, key)
    if meta is None:
        raise Failure.not_found(f"{store}:{key}: not found")
    offset = 0
    while offset < meta.size:
        data = get_range(store, key, offset, min(chunk, meta.size - offset))
        if not data:
            break
        yield data
        offset += len(data)


def put(store: str, key: str, data: bytes | str) -> None:
    """Writes the object whole (a `str` is written as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    _backend.current().store_put(store, key, bytes(data))


def head(store: str, key: str) -> Optional[ObjectMeta]:
    """The object's key, size and last-modified time, or None when it does not exist."""
    return _backend.current().store_head(store, key)


def list(store: str, prefix: str = "") -> List[ObjectMeta]:  # noqa: A001 - the ABI's name
    """Every object under `prefix` (whole `/`-separated segments), recursively; `""` lists the store."""
    return builtins.list(_backend.current().store_list(store, prefix))


def delete(store: str, key: str) -> None:
    """Deletes the object; deleting a missing one succeeds."""
    _backend.current().store_delete(store, key)


def copy(
    from_store: str, from_key: str, to_store: str, to_key: str, expected_sha256: Optional[str] = None
) -> CopyResult:
    """Copies inside the host, streaming and hashing: the bytes never pass through the plugin. With
    `expected_sha256` (lowercase hex), a mismatch is `verification-failed` and nothing is left behind."""
    return _backend.current().store_copy(from_store, from_key, to_store, to_key, expected_sha256)
