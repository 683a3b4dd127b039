"""Labelled folders for fine-tuning and probes: per-band ``B*.tif`` + ``labels.tif`` + ``classes.json``.

* :class:`LabelledScene` / :class:`LabelledChips`: image/label chips of a labelled folder,
  unlabelled/nodata pixels -> :data:`IGNORE_INDEX`.
* :func:`region_split`: train / validation / test blocks that keep regions apart;
  :func:`label_fraction_subset`: nested chip subsets drawn with a fixed seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from earth_embed.errors import ConfigError, RasterInputError
from training.data.unlabelled import DN_SCALE

if TYPE_CHECKING:
    from rasterio.windows import Window

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


class LabelledScene:
    """A labelled folder: per-band ``B*.tif``, ``labels.tif`` (0 = unlabelled, 1..K), ``classes.json``."""

    def __init__(self, folder: str | Path, dn_offset: float = 0.0) -> None:
        self.folder = Path(folder)
        for name in ("labels.tif", "classes.json"):
            if not (self.folder / name).is_file():
                raise RasterInputError(
                    f"{self.folder} has no {name}; a labelled folder holds per-band B*.tif, labels.tif "
                    "(0 = unlabelled, classes 1..K) and classes.json"
                )
        meta = json.loads((self.folder / "classes.json").read_text(encoding="utf-8"))
        names = {int(k): v for k, v in meta["names"].items()}
        colors = {int(k): v for k, v in meta.get("colors_rgb", {}).items()}
        ignore = int(meta.get("ignore_index", 0))
        ids = sorted(k for k in names if k != ignore)
        if ids != list(range(1, len(ids) + 1)):
            raise RasterInputError(f"{self.folder}/classes.json: class ids must be 1..K, got {ids}")
        self.classes = [names[k] for k in ids]
        self.colors = [list(colors.get(k, [128, 128, 128])) for k in ids]
        self.dn_offset = float(dn_offset)
        import rasterio

        with rasterio.open(self.folder / "labels.tif") as lab:
            self.height, self.width = lab.height, lab.width

    def read(
        self, window: Window | tuple[tuple[int, int], tuple[int, int]], bands: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(reflectance (C,h,w) float32 with nodata 0, labels (h,w) int64 in 0..K-1 or IGNORE_INDEX)."""
        import rasterio

        from earth_embed.inputs import open_scene

        with open_scene(self.folder, bands=bands) as sc:
            if (sc.height, sc.width) != (self.height, self.width):
                raise RasterInputError(
                    f"{self.folder}: labels.tif is {self.height}x{self.width} but the bands' finest grid is "
                    f"{sc.height}x{sc.width}; labels must be on the 10 m grid"
                )
            dn = sc.read(window, bands=bands)
        with rasterio.open(self.folder / "labels.tif") as lab:
            y = lab.read(1, window=window, boundless=True, fill_value=0).astype(np.int64)
        valid = ~(dn == 0).any(0)
        y = np.where((y > 0) & valid, y - 1, IGNORE_INDEX)
        refl = ((dn + self.dn_offset) / DN_SCALE).astype(np.float32)
        refl[:, ~valid] = 0.0
        return refl, y


@dataclass
class Chip:
    row: int
    col: int
    size: int
    n_labelled: int = 0


def region_split(
    scene: LabelledScene, chip: int = 64, test: float = 0.3, val: float = 0.15, gap: int | None = None, axis: str = "x"
) -> dict[str, list[Chip]]:
    """Non-overlapping chips in three blocks along ``axis`` that keep regions apart.

    Along x (columns, west to east): ``[train | gap | val | gap | test]``; ``test`` and ``val`` are
    fractions of the scene extent; ``gap`` (default one chip) pixels separate the blocks so no chip
    of one block touches another. Chips without any labelled pixel are dropped.
    """
    if axis not in ("x", "y"):
        raise ConfigError(f"split axis must be 'x' or 'y', got {axis!r}")
    gap = chip if gap is None else int(gap)
    extent = scene.width if axis == "x" else scene.height
    other = scene.height if axis == "x" else scene.width
    test_start = int(round(extent * (1 - test)))
    val_start = int(round(extent * (1 - test - val)))
    blocks = {"train": (0, val_start - gap), "val": (val_start, test_start - gap), "test": (test_start, extent)}
    if val <= 0:
        blocks = {"train": (0, test_start - gap), "val": (0, 0), "test": (test_start, extent)}
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(scene.folder / "labels.tif") as lab:  # labels counted chip by chip (windows)
        out: dict[str, list[Chip]] = {}
        for name, (a, b) in blocks.items():
            chips = []
            for p in range(a, b - chip + 1, chip):
                for q in range(0, other - chip + 1, chip):
                    row, col = (q, p) if axis == "x" else (p, q)
                    labels = lab.read(1, window=Window(col, row, chip, chip))
                    n = int((labels > 0).sum())
                    if n > 0:
                        chips.append(Chip(row, col, chip, n))
            out[name] = chips
    if not out["train"] or not out["test"]:
        raise ConfigError(
            f"region split of {scene.folder} ({scene.height}x{scene.width}, chip {chip}) left "
            f"{len(out['train'])} train and {len(out['test'])} test chips; use a smaller chip or gap"
        )
    return out


def label_fraction_subset(chips: Sequence[Chip], fraction: float, seed: int) -> list[Chip]:
    """``ceil(fraction * n)`` chips (at least 1) drawn with ``seed``; nested across fractions for one seed."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(len(chips))
    k = max(1, math.ceil(fraction * len(chips) - 1e-9))
    return [chips[i] for i in sorted(order[:k])]


def sparse_labels(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A copy of labels ``y`` that keeps each labelled pixel with probability ``fraction`` (the rest become
    IGNORE_INDEX): scattered point labels over every chip. One uniform draw per pixel from ``seed``, so the kept
    pixels are nested across fractions for one seed."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction}")
    u = torch.rand(y.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(u < fraction, y, torch.full_like(y, IGNORE_INDEX)) if fraction < 1 else y.clone()


class LabelledChips(Dataset):
    """Image/label chips of a :class:`LabelledScene`; each chip is read once (window) and cached.

    The cache is shared by all instances of a process (experiments fine-tune many times on the same chips).
    """

    _cache: ClassVar[dict[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}
    cache_limit = 4096  # chips

    def __init__(self, scene: LabelledScene, chips: Sequence[Chip], bands: Sequence[str]) -> None:
        self.scene, self.chips, self.bands = scene, list(chips), list(bands)

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.chips[i]
        key = (str(self.scene.folder.resolve()), self.scene.dn_offset, tuple(self.bands), c.row, c.col, c.size)
        if key not in self._cache:
            refl, y = self.scene.read(((c.row, c.row + c.size), (c.col, c.col + c.size)), self.bands)
            if len(self._cache) >= self.cache_limit:
                self._cache.clear()
            self._cache[key] = (torch.from_numpy(refl), torch.from_numpy(y))
        return self._cache[key]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All chips as (N, C, S, S) reflectance and (N, S, S) labels."""
        xs, ys = zip(*(self[i] for i in range(len(self))))
        return torch.stack(xs), torch.stack(ys)
