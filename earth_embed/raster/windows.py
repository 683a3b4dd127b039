"""Tile grid, smooth blend weights and the streaming blender that stitches tile outputs seamlessly.

Along each axis, tile ``k`` starts at ``0`` (k = 0) or ``k * step - shift`` (k >= 1), where
``step = tile - overlap``. Both ``step`` and ``shift`` are multiples of the model's ``pad_multiple``,
so every tile sees the same stride phase as a whole-image forward pass. Between two neighbouring
tiles the overlap is split into: a guard band at the start of the later tile (weight 0 there), a
raised-cosine ramp where both tiles are blended (weights sum to exactly 1), and a guard band at the
end of the earlier tile. Pixels next to a tile's inner edge (whose context was cut off) therefore
never contribute. With ``shift`` equal to the guard, every cut between finished output regions falls
on a multiple of ``step``, so output blocks that divide ``step`` are written whole, once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import RasterInputError


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one axis of length ``size``."""

    size: int
    tile: int
    overlap: int
    starts: tuple[int, ...]  # tile origins
    lengths: tuple[int, ...]  # tile lengths (the last one is cropped at the scene edge)
    guard_start: int  # zero-weight band at the start of every tile but the first
    ramp: int  # blend band width
    cuts: tuple[int, ...]  # finished-region boundaries: region k is [cuts[k], cuts[k+1])

    def weight(self, k: int) -> np.ndarray:
        """Blend weight (float32, length ``lengths[k]``) of tile ``k`` along this axis."""
        n = self.lengths[k]
        w = np.ones(n, dtype=np.float32)
        if self.ramp:
            t = (np.arange(self.ramp, dtype=np.float64) + 0.5) / self.ramp
            rise = np.sin(0.5 * np.pi * t) ** 2
        if k > 0:  # cut-off context at the start: guard, then rising ramp
            g = self.guard_start
            w[:g] = 0.0
            if self.ramp:
                w[g : g + self.ramp] = rise
        if k < len(self.starts) - 1:  # a later tile follows: falling ramp, then guard
            a = self.cuts[k + 1] - self.starts[k]  # ramp start, tile-local
            if self.ramp:
                w[a : a + self.ramp] = w[a : a + self.ramp] * (1.0 - rise)
            w[a + self.ramp :] = 0.0
        return w


def plan_axis(size: int, tile: int, overlap: int, multiple: int = 1) -> AxisPlan:
    """Tile origins, lengths, guard/ramp split and finished-region cuts along one axis."""
    step = tile - overlap
    if overlap == 0:
        shift = guard = ramp = 0
    else:
        # the guard at the start of a later tile doubles as the grid shift; a multiple of `multiple`
        shift = multiple * math.ceil(max(overlap / 4, 1) / multiple)
        if shift >= overlap:  # cannot align: plain symmetric split
            shift, guard = 0, max(1, overlap // 4)
        else:
            guard = shift
        ramp = (overlap - guard) // 2
    starts = [0]
    while starts[-1] + tile < size:
        starts.append(len(starts) * step - shift)
    lengths = [min(tile, size - s) for s in starts]
    cuts = [0] + [s + guard for s in starts[1:]] + [size]
    return AxisPlan(size, tile, overlap, tuple(starts), tuple(lengths), guard, ramp, tuple(cuts))


def check_tiling(tile: int, overlap: int, multiple: int) -> None:
    """Raise a clear error for tile/overlap values the streamer cannot use."""
    if int(tile) != tile or tile < 1:
        raise RasterInputError(f"tile={tile} must be a positive whole number of pixels, e.g. {16 * multiple}.")
    if int(overlap) != overlap or overlap < 0 or overlap >= tile / 2:
        raise RasterInputError(f"overlap={overlap} must be >= 0 and smaller than half the tile ({tile}).")
    if tile % multiple or overlap % multiple:
        raise RasterInputError(
            f"tile={tile} and overlap={overlap} must be multiples of the model's pad_multiple ({multiple}) so "
            f"that every tile sees the same stride phase; e.g. tile={(tile // multiple + 1) * multiple}, "
            f"overlap={max(multiple, overlap // multiple * multiple)}."
        )


def default_tiling(multiple: int) -> tuple[int, int]:
    """Default (tile, overlap) for a model with this ``pad_multiple``: step 1024, overlap >= 64."""
    overlap = multiple * math.ceil(64 / multiple)
    step = multiple * math.ceil(1024 / multiple)
    return step + overlap, overlap


@dataclass(frozen=True)
class Tile:
    """One model window: scene rows/cols ``[row, row + height) x [col, col + width)``, grid index (i, j)."""

    i: int
    j: int
    row: int
    col: int
    height: int
    width: int


class TileGrid:
    """All tiles of a ``height x width`` scene, in row-major order, plus their blend weights."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> None:
        check_tiling(tile, overlap, multiple)
        self.rows = plan_axis(height, tile, overlap, multiple)
        self.cols = plan_axis(width, tile, overlap, multiple)
        self.height, self.width = height, width

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tiles (rows, cols)."""
        return len(self.rows.starts), len(self.cols.starts)

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def __iter__(self) -> Iterator[Tile]:
        for i, (r, h) in enumerate(zip(self.rows.starts, self.rows.lengths)):
            for j, (c, w) in enumerate(zip(self.cols.starts, self.cols.lengths)):
                yield Tile(i, j, r, c, h, w)

    def weight(self, t: Tile) -> np.ndarray:
        """2-D blend weight (h, w) of a tile; over all tiles the weights sum to 1 at every pixel."""
        return np.outer(self.rows.weight(t.i), self.cols.weight(t.j))

    @property
    def block_multiple(self) -> int:
        """Every finished region starts at a multiple of this (use output blocks that divide it)."""
        cuts = [c for c in self.rows.cuts[1:-1] + self.cols.cuts[1:-1]]
        return math.gcd(*cuts) if cuts else 0


class Blender:
    """Turns weighted tile outputs, fed in row-major order, into finished output regions.

    :meth:`add` takes a tile's output ``(D, h, w)`` float32 and returns the finished regions it
    completes as ``(row0, col0, block)``; only one row of blend ramps (``ramp x width x D``) and one
    column ramp (``tile x ramp x D``) are kept between tiles, so memory does not grow with the scene.
    """

    def __init__(self, grid: TileGrid, channels: int) -> None:
        self.grid = grid
        self.channels = channels
        ramp_r = grid.rows.ramp
        self._vcarry = np.zeros((channels, ramp_r, grid.width), np.float32)  # from the tile row above
        self._vnext = np.zeros_like(self._vcarry)
        self._hcarry: np.ndarray | None = None  # from the tile to the left
        self._expect = 0

    def add(self, t: Tile, out: np.ndarray) -> tuple[int, int, np.ndarray]:
        """Blend tile ``t``'s output (modified in place) and return its finished region ``(row0, col0, block)``.

        ``block`` is a view into ``out``; weights are applied only where they differ from 1.
        """
        g = self.grid
        if t.i * g.shape[1] + t.j != self._expect:
            raise RuntimeError("tiles must be fed to the Blender in row-major order")
        self._expect += 1
        rows, cols = g.rows, g.cols
        wr, wc = rows.weight(t.i), cols.weight(t.j)
        r0, r1 = rows.cuts[t.i], rows.cuts[t.i + 1]  # finished rows of this tile row
        c0, c1 = cols.cuts[t.j], cols.cuts[t.j + 1]
        a, b, p, q = r0 - t.row, r1 - t.row, c0 - t.col, c1 - t.col  # the same, tile-local
        last_row, last_col = t.i == g.shape[0] - 1, t.j == g.shape[1] - 1
        hcarry = None
        if not last_col and cols.ramp:  # the falling ramp to the right, for the next tile
            hcarry = out[:, a:b, q : q + cols.ramp] * wc[None, None, q : q + cols.ramp]
            _scale_rows(hcarry, wr[a:b])
        if not last_row and rows.ramp:  # the falling ramp below, for the next tile row
            below = out[:, b : b + rows.ramp, :] * (wr[b : b + rows.ramp, None] * wc[None, :])[None]
            self._vnext[:, :, t.col : t.col + t.width] += below
        block = out[:, a:b, p:q]
        _scale_rows(block, wr[a:b])
        _scale_cols(block, wc[p:q])
        if t.j > 0 and cols.ramp:
            block[:, :, : cols.ramp] += self._hcarry
        if t.i > 0 and rows.ramp:
            block[:, : rows.ramp, :] += self._vcarry[:, :, c0:c1]
        self._hcarry = hcarry
        if last_col and not last_row and rows.ramp:  # tile row done: its ramp becomes the next carry
            self._vcarry, self._vnext = self._vnext, self._vcarry
            self._vnext.fill(0.0)
        return r0, c0, block


def _span(w: np.ndarray) -> tuple[int, int]:
    """Smallest [lo, hi) holding every weight that is not 1."""
    idx = np.flatnonzero(w != 1.0)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


def _scale_rows(x: np.ndarray, w: np.ndarray) -> None:
    lo, hi = _span(w)
    if hi > lo:
        x[:, lo:hi, :] *= w[None, lo:hi, None]


def _scale_cols(x: np.ndarray, w: np.ndarray) -> None:
    lo, hi = _span(w)
    if hi > lo:
        x[:, :, lo:hi] *= w[None, None, lo:hi]
