"""The region store's registry of finished units: what each unit wrote, and whether it is still there.

A unit is one shard of each of its group's two data arrays (``embeddings``, ``scales``): two files,
``GROUP/embeddings/c/0/R/C`` and ``GROUP/scales/c/R/C`` (a shard without one valid pixel is not
written by zarr: the entry records it as absent). After the data is on disk (``fsync``), the unit's
entry ``_units/GROUP/R.C.json`` records, per file, its byte count, its SHA-256 and its modification
time. A unit counts as done only while its files still match:

- :func:`check_entry` with ``full=False`` (every resume): each file must exist (or be absent as
  recorded) with the recorded byte count; a file whose modification time changed (a copy, a restore)
  is hashed once and its entry refreshed when the hash still matches. No chunk is read otherwise.
- ``full=True`` (``earth-embed verify``): every file is hashed, whatever its time says.

Killed writers leave temporary files: zarr's ``KEY.<32 hex>.partial`` and the registry's
``.NAME.<pid>-<hex>.tmp``; :func:`store_leftovers` finds them (removed by the writer holding the
store's lock).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import quantize

REGISTRY = "_units"
#: The registry entry format that records files (entries of earlier versions hold counts only).
ENTRY_FORMAT = 2
DATA_ARRAYS = ("embeddings", quantize.SCALES_NAME)
_ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$")
_JSON_TEMP = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp$")
_HASH_BLOCK = 8 << 20


def write_json(path: Path, obj: Any) -> None:
    """Write JSON under a temporary name, flush it to disk, then rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def compressor() -> list[Any]:
    """The codecs after the bytes of every data array (codes and scales): Blosc with zstd level 1 after a bit
    shuffle, then a CRC-32C of each chunk. On real int8 codes of the released encoder Blosc made 0.64 of the bytes
    in 0.17 s of CPU per 1024 x 976 unit, where plain zstd level 3 made 0.66 in 0.38 s (scales: 0.21 against
    0.25; issue 36, 2026-12-07). Blosc decodes a flipped byte without an error; the checksum makes a damaged
    chunk fail to read, as zstd's own frame checks did."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    return [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), Crc32cCodec()]


def shard_keys(group: str, shard: tuple[int, int]) -> dict[str, str]:
    """Store-relative paths of the two shard files of unit ``shard`` of ``group`` (zarr v3 default keys)."""
    r, c = shard
    return {
        "embeddings": f"{group}/embeddings/c/0/{r}/{c}",
        quantize.SCALES_NAME: f"{group}/{quantize.SCALES_NAME}/c/{r}/{c}",
    }


def record_file(root: Path, key: str) -> dict[str, Any]:
    """What the registry keeps of one written shard file (flushed to disk first), or that it is absent."""
    path = root / key
    if not path.is_file():
        return {"key": key, "absent": True}
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    st = path.stat()
    return {"key": key, "bytes": st.st_size, "sha256": sha256_file(path), "mtime_ns": st.st_mtime_ns}


@dataclass
class UnitCheck:
    """The state of one unit: ``ok`` when its entry and files match; ``problem`` says what does not."""

    key: str
    ok: bool
    problem: str = ""
    refreshed: bool = False  # the entry's file times were updated (the files were copied, their hashes match)
    valid_pixels: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_entry(path: Path) -> dict[str, Any] | None:
    """The registry entry at ``path``, or None when it is missing or unreadable."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) else None


def check_entry(root: Path, entry_path: Path, key: str, *, full: bool = False) -> UnitCheck:
    """Does the unit ``key`` of the store at ``root`` still hold what its entry recorded (see the module doc)?"""
    if not entry_path.is_file():
        return UnitCheck(key, False, "not finished (no registry entry)")
    entry = read_entry(entry_path)
    if entry is None:
        return UnitCheck(key, False, f"its registry entry {entry_path} is unreadable")
    if entry.get("format") != ENTRY_FORMAT or not isinstance(entry.get("files"), dict):
        return UnitCheck(key, False, "its registry entry is of an earlier earth-embed and records no checksums")
    files: dict[str, dict[str, Any]] = entry["files"]
    refreshed = False
    for name in DATA_ARRAYS:
        rec = files.get(name)
        if not isinstance(rec, dict) or "key" not in rec:
            return UnitCheck(key, False, f"its registry entry lacks the {name} shard")
        path = root / rec["key"]
        if rec.get("absent"):
            if path.exists():
                return UnitCheck(key, False, f"{rec['key']} exists but was recorded as empty (not written)")
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            return UnitCheck(key, False, f"its {name} shard {rec['key']} is missing")
        if st.st_size != rec.get("bytes"):
            return UnitCheck(
                key, False, f"its {name} shard {rec['key']} has {st.st_size} bytes, {rec.get('bytes')} were written"
            )
        if full or st.st_mtime_ns != rec.get("mtime_ns"):
            try:
                digest = sha256_file(path)
            except OSError as err:
                return UnitCheck(key, False, f"its {name} shard {rec['key']} cannot be read ({err.strerror})")
            if digest != rec.get("sha256"):
                return UnitCheck(key, False, f"its {name} shard {rec['key']} differs from what was written (SHA-256)")
            if st.st_mtime_ns != rec.get("mtime_ns"):
                rec["mtime_ns"] = st.st_mtime_ns
                refreshed = True
    if refreshed:
        write_json(entry_path, entry)
    return UnitCheck(key, True, refreshed=refreshed, valid_pixels=int(entry.get("valid_pixels", 0)), files=files)


def store_leftovers(root: Path) -> list[Path]:
    """Temporary files that killed writers left inside the store at ``root``."""
    found = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if _ZARR_TEMP.search(name) or _JSON_TEMP.match(name):
                found.append(Path(folder) / name)
    return sorted(found)


__all__ = [
    "DATA_ARRAYS",
    "ENTRY_FORMAT",
    "REGISTRY",
    "UnitCheck",
    "check_entry",
    "read_entry",
    "record_file",
    "sha256_file",
    "shard_keys",
    "store_leftovers",
    "write_json",
]
