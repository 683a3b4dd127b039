"""Damage done to finished region stores and embedding files, one way each, for ``test_store_faults.py`` and
``test_codes_scales.py``; and an environment whose Python cannot import some packages (a real interpreter
started with a ``sitecustomize`` that refuses them), for the cases "a package is missing here / on the cluster"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

GROUP = "EPSG_32618"


def shard(store: Path, name: str, r: int, c: int) -> Path:
    """The shard file of unit (r, c) of the ``embeddings`` or ``scales`` array."""
    return store / GROUP / name / "c" / ("0/" if name == "embeddings" else "") / str(r) / str(c)


def delete_shard(store: Path) -> None:
    shard(store, "embeddings", 0, 1).unlink()


def garbage_shard(store: Path) -> None:
    """Overwrite the start of a scales shard with text (its size changes too)."""
    shard(store, "scales", 1, 1).write_bytes(b"not a zarr shard, a disk error's leftover")


def other_units_shard(store: Path) -> None:
    """Another unit's (valid) embeddings shard copied over this one's."""
    shutil.copy(shard(store, "embeddings", 0, 0), shard(store, "embeddings", 0, 1))


def bitflip_keep_time(store: Path) -> None:
    """One byte changed in the middle of a shard; size and modification time kept (only a hash sees it)."""
    f = shard(store, "embeddings", 1, 0)
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def delete_entry(store: Path) -> None:
    (store / "_units" / GROUP / "0.1.json").unlink()


def corrupt_entry(store: Path) -> None:
    (store / "_units" / GROUP / "0.1.json").write_text('{"format": 2, "unit": ')


def corrupt_array_meta(store: Path) -> None:
    (store / GROUP / "scales" / "zarr.json").write_text('{"zarr_format": 3, "shape": [256, ')


def corrupt_root_meta(store: Path) -> None:
    p = store / "zarr.json"
    p.write_bytes(p.read_bytes()[:200])


def delete_array_meta(store: Path) -> None:
    (store / GROUP / "embeddings" / "zarr.json").unlink()


def leftovers_of_a_killed_run(store: Path) -> list[Path]:
    """What kill -9 leaves: zarr's temporary shard, a registry entry's temporary file, a stale lock file."""
    made = [
        store / GROUP / "embeddings" / "c" / "0" / "1" / f"1.{'ab' * 16}.partial",
        store / "_units" / GROUP / ".1.1.json.4194311-0123abcd.tmp",
        store.parent / f".{store.name}.lock",
    ]
    for p in made:
        p.write_bytes(b"left by a killed run")
    return made


def import_blocker(folder: Path, *modules: str) -> Path:
    """A folder with a ``sitecustomize.py`` that makes ``import MODULE`` fail for ``modules`` (and their
    submodules) in any Python started with the folder on ``PYTHONPATH``: a real interpreter without them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"BLOCKED = {tuple(modules)!r}\n"
        "class _Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Blocker())\n",
        encoding="utf-8",
    )
    return folder
