"""OCI images of granted stores, restored into and compared with granted directories, inside the host: the bytes
never pass through the plugin. See docs/plugin-abi.md, "Image functions"."""

from __future__ import annotations

from typing import Optional

from . import _backend
from ._types import CompareResult, UnpackResult


def unpack(store: str, prefix: str, tag: str, dir: str, *, user: Optional[str] = None) -> UnpackResult:
    """Restores the image `tag` of the layout under `prefix` of a store granted `read` into `dir` (inside a
    `files` directory granted `rw`). With `user` (one the step's `exec` grant runs a program as), everything
    restored is given to that user and `dir` gets mode 0700 (`images.unpack-as`)."""
    return _backend.current().image_unpack(store, prefix, tag, dir, user)


def compare(store: str, prefix: str, tag: str, dir: str) -> CompareResult:
    """Re-hashes every regular file of the image against `dir`."""
    return _backend.current().image_compare(store, prefix, tag, dir)
