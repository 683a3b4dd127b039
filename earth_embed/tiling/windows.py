"""``embed_raster``'s ``tile``/``overlap`` in terms of the chunk plan's compute block and halo.

A window of ``tile`` px is a compute block of ``tile - overlap`` px plus a halo of ``overlap / 2``
px on every side; neighbouring windows therefore overlap by ``overlap`` px, and each output pixel
comes from the one window whose block holds it (halo trimmed, no blending; see
:mod:`earth_embed.tiling.plan`).
"""

from __future__ import annotations

from ..errors import RasterInputError
from .plan import DEFAULT_BLOCK, default_halo, round_up


def check_tiling(tile: int, overlap: int, multiple: int) -> None:
    """Raise a clear error for tile/overlap values the plan cannot use."""
    if int(tile) != tile or tile < 1:
        raise RasterInputError(f"tile={tile} must be a positive whole number of pixels, e.g. {16 * multiple}.")
    if int(overlap) != overlap or overlap < 0 or overlap >= tile / 2:
        raise RasterInputError(
            f"overlap={overlap} must be >= 0 and smaller than half the tile: below {tile / 2:g} for tile={tile}."
        )
    if tile % multiple or overlap % multiple:
        raise RasterInputError(
            f"tile={tile} and overlap={overlap} must be multiples of the model's pad_multiple ({multiple}) so "
            f"that every tile sees the same stride phase; e.g. tile={(tile // multiple + 1) * multiple}, "
            f"overlap={max(multiple, overlap // multiple * multiple)}."
        )


def default_tiling(multiple: int) -> tuple[int, int]:
    """Default (tile, overlap) for a model with this ``pad_multiple``: a 1024 px block plus its halo."""
    halo = default_halo(multiple)
    return round_up(DEFAULT_BLOCK, multiple) + 2 * halo, 2 * halo


def block_and_halo(tile: int, overlap: int) -> tuple[int, int]:
    """(compute block, halo) of a ``tile`` px window overlapping its neighbours by ``overlap`` px."""
    return tile - overlap, overlap // 2
