"""A region store's one-writer lock, and the files killed writers leave (inside a store, and half-built
copies beside it): found, listed and removed here, for the engine, ``verify --repair`` and ``earth-embed clean``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError
from .atomic import OutputLock
from .zarr_units import REGISTRY, store_leftovers

log = logging.getLogger("earth_embed")
_CREATE_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:new|layout)-\d+-[0-9a-f]{8}$")


@contextlib.contextmanager
def store_lock(path: str | os.PathLike, clean: bool = True) -> Iterator[OutputLock]:
    """Hold the store's one-writer lock (``.NAME.zarr.lock`` beside it; released by the kernel when the
    process dies, even on ``kill -9``); with ``clean``, remove what killed writers left inside the store."""
    p = Path(path)
    lock = OutputLock(p)
    lock.acquire()  # OutputError naming the live run that holds it
    try:
        if clean:
            remove_leftovers(p)
        yield lock
    finally:
        lock.release()


def _creation_leftovers(path: Path) -> list[Path]:
    """Half-built stores (``.NAME.new-...``) and metadata rewrites (``.NAME.layout-...``) beside ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / e for e in entries if (m := _CREATE_TEMP.match(e)) and m.group("name") == path.name)


def stores_in(folder: str | os.PathLike) -> list[Path]:
    """Region stores in ``folder`` (or ``folder`` itself), and names of stores whose creation was killed."""
    f = Path(folder)
    if is_region_store(f):
        return [f]
    found = {p for p in f.iterdir() if is_region_store(p)} if f.is_dir() else set()
    found |= {f / m.group("name") for e in (os.listdir(f) if f.is_dir() else []) if (m := _CREATE_TEMP.match(e))}
    return sorted(found)


def remove_leftovers(path: Path) -> list[Path]:
    """Delete the temporary files of killed writers inside the store, and half-built copies beside it
    (call it holding :func:`store_lock`)."""
    removed = []
    for d in _creation_leftovers(path):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    for f in store_leftovers(path) if path.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            removed.append(f)
    if removed:
        log.warning(
            "removed %d temporary file(s) that an interrupted run left in %s: %s",
            len(removed),
            path,
            ", ".join(f.name for f in removed[:5]) + (" ..." if len(removed) > 5 else ""),
        )
    return removed


def clean_store(path: str | os.PathLike) -> list[Path]:
    """Remove a store's leftovers of killed runs unless a live run holds it (then nothing, no error)."""
    p = Path(path)
    lock = OutputLock(p)
    try:
        lock.acquire()
    except OutputError:
        return []
    try:
        return remove_leftovers(p)
    finally:
        lock.release()


def is_region_store(path: str | os.PathLike) -> bool:
    """True for a folder that holds an earth-embed region store (a root ``zarr.json`` and a ``_units`` registry)."""
    p = Path(path)
    return p.is_dir() and (p / "zarr.json").is_file() and (p / REGISTRY).is_dir()
