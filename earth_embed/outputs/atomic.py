"""Guards around one output file: a lock (one writer per name), leftovers of killed runs, verification.

An output ``DIR/NAME`` is written as ``DIR/.NAME.<stage>-<host>-<pid>-<random>.tif`` and renamed into
place only once verified. While a run writes it holds an advisory lock on ``DIR/.NAME.lock``
(``fcntl.flock``: the kernel releases it when the process dies, even on ``kill -9``), so

- a second run to the same name is refused instead of silently replacing the first one's file, and
- temporary files of ``NAME`` found by the run that holds the lock are leftovers of a killed run:
  they are removed, and named, by the next run to that name or by ``earth-embed clean DIR``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError

#: Stages of a temporary output file (streamed, quantised, with overviews).
TEMP_STAGES = ("partial", "int8", "cog")
# ".NAME.partial-HOST-PID-RANDOM.tif" (HOST absent in names of earlier versions)
# (an output folder's: ".NAME.partial-HOST-PID-RANDOM", no suffix)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:" + "|".join(TEMP_STAGES) + r")-(?:.+-)?\d+-[0-9a-f]{8}(?:\.tif)?$")
_LOCK = re.compile(r"^\.(?P<name>.+)\.lock$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def temp_name(path: Path, stage: str, suffix: str = ".tif") -> Path:
    """The hidden temporary name of ``path`` for one writing stage (``suffix=""`` for an output folder)."""
    return path.with_name(f".{path.name}.{stage}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def output_folder(out: Path) -> Iterator[Path]:
    """Write the output folder ``out`` of ``fit`` or ``change`` through a hidden temporary folder beside it,
    holding ``out``'s lock (leftover folders of killed runs are removed, and named); on success the folder
    replaces ``out`` (an existing folder: the caller checked ``--overwrite``), on failure it is removed."""
    lock = OutputLock(out)
    lock.acquire()
    tmp = temp_name(out, "partial", suffix="")
    try:
        tmp.mkdir()
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        lock.release()


def temp_files(path: Path) -> list[Path]:
    """Temporary files of ``path`` present in its folder (of this or any earlier run)."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / e for e in entries if (m := _TEMP.match(e)) and m.group("name") == path.name)


class OutputLock:
    """An exclusive, non-blocking lock on an output name; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> list[Path]:
        """Take the lock or raise :class:`OutputError`; returns the leftovers it removed."""
        import fcntl

        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise OutputError(
                    f"Cannot create the lock file {self.lock_path} ({err.strerror}); choose a writable folder."
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd)
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise OutputError(
                        f"Another earth-embed run ({holder or 'unknown process'}) is writing {self.path} right now. "
                        "Wait for it to finish, or choose another output name."
                    ) from err
                raise OutputError(f"Cannot lock {self.lock_path} ({err.strerror}); choose another folder.") from err
            # the file we locked must still be the one under the name (a finishing run unlinks it)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        removed = []
        for leftover in temp_files(self.path):  # nobody else can be writing them: we hold the lock
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
                removed.append(leftover)
        if removed:
            logging.getLogger("earth_embed").warning(
                "removed %d leftover file(s) of an earlier, interrupted run to %s: %s",
                len(removed),
                self.path,
                ", ".join(p.name for p in removed),
            )
        return removed

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        os.close(self._fd)
        self._fd = None


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    return ""


def clean_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary and lock files that killed runs left in ``folder``; files of live runs are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"{folder} is not a folder; give the folder that holds the outputs.")
    names = set()
    for entry in os.listdir(folder):
        m = _TEMP.match(entry) or _LOCK.match(entry)
        if m:
            names.add(m.group("name"))
    removed: list[Path] = []
    for name in sorted(names):
        lock = OutputLock(folder / name)
        try:
            removed += lock.acquire()
        except OutputError:
            continue  # a live run holds it
        had_lock_file = lock.lock_path.exists()
        lock.release()
        if had_lock_file and not any(p == lock.lock_path for p in removed):
            removed.append(lock.lock_path)
    return removed


def fsync(path: Path) -> None:
    """Flush ``path`` to disk; write errors the kernel kept until now (ENOSPC, EIO, EDQUOT) surface here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_geotiff(path: Path, height: int, width: int, count: int) -> None:
    """Raise :class:`OutputError` unless ``path`` opens as a complete GeoTIFF of that shape.

    Every stored block must lie inside the file (a full disk or a file-size limit leaves blocks whose
    offset and size point past the end). Blocks never written (all nodata, ``SPARSE_OK``) are fine.
    """
    import rasterio
    from rasterio.errors import RasterioError

    size = path.stat().st_size
    try:
        with rasterio.open(path) as ds:
            if (ds.height, ds.width, ds.count) != (height, width, count):
                raise OutputError(
                    f"{path} came out as {ds.height}x{ds.width} px with {ds.count} bands instead of "
                    f"{height}x{width} with {count}; nothing was written under the final name."
                )
            bh, bw = ds.block_shapes[0]
            rows, cols = -(-height // bh), -(-width // bw)
            for band in range(1, count + 1):
                for r in range(rows):
                    for c in range(cols):
                        off = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=band)
                        if off is None:
                            continue
                        nbytes = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=band)
                        if int(off) + int(nbytes or 0) > size:
                            raise OutputError(
                                f"The file is truncated: block ({r}, {c}) of band {band} ends at byte "
                                f"{int(off) + int(nbytes or 0)} but the file has {size} bytes."
                            )
    except RasterioError as err:
        raise OutputError(f"The written file cannot be read back ({err}).") from err
    except Exception as err:  # rasterio's CPLE_* errors are not RasterioError subclasses
        if isinstance(err, OutputError):
            raise
        raise OutputError(f"The written file cannot be read back ({err}).") from err


class GdalErrors(logging.Handler):
    """Collect the errors GDAL reports through rasterio's log (some write errors are only logged).

    Use as a context manager around closing a dataset; :attr:`messages` holds what GDAL signalled.
    """

    LOGGERS = ("rasterio._env", "rasterio._err", "rasterio._io")
    _WRITE_WORDS = ("write", "writing", "space", "too large", "i/o", "io error", "seek", "flush", "directory")

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []
        self._saved: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        found = re.search(r"msg=['\"](.*)['\"]$", text)
        text = found.group(1) if found else text
        if "error" in text.lower() and any(w in text.lower() for w in self._WRITE_WORDS):
            self.messages.append(text)

    def __enter__(self) -> GdalErrors:
        for name in self.LOGGERS:
            log = logging.getLogger(name)
            self._saved.append((log, log.level))
            if log.getEffectiveLevel() > logging.INFO:
                log.setLevel(logging.INFO)
            log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for log, level in self._saved:
            log.removeHandler(self)
            log.setLevel(level)
        self._saved.clear()


def write_failure(path: Path, detail: str) -> OutputError:
    """The error for a failed write of ``path``: the cause, the fix, and that nothing was left."""
    folder = path.parent if str(path.parent) else Path(".")
    free = ""
    with contextlib.suppress(OSError):
        import shutil

        free = f" ({shutil.disk_usage(folder).free / 1e9:.2f} GB free in {folder} now)"
    return OutputError(
        f"Writing {path} failed: {detail} The disk is probably full or a file-size limit (ulimit -f) was "
        f"reached{free}. Nothing was written under {path}. Free some space, raise the limit or write to another "
        "folder, then run again."
    )


__all__ = [
    "TEMP_STAGES",
    "GdalErrors",
    "OutputLock",
    "clean_leftovers",
    "fsync",
    "temp_files",
    "temp_name",
    "verify_geotiff",
    "write_failure",
]
