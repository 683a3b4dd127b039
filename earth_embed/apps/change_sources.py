"""The embeddings ``earth-embed change`` compares: given as embedding rasters, or made here from scenes.

A scene is embedded with one model for both dates: ``--model``, else the model named by the other input
when that one is an embedding raster, else the released encoder. The first date is embedded on its own grid;
the second is embedded on the first's grid, its bands resampled by georeference first when its grid differs
(:func:`~.change_inputs.write_scene_on_grid`). The storage follows the other input (int8 when it is int8,
else float16), and so does the precision (fp32 when it records none), so that the two always compare.
Each scene is masked with ``--mask auto`` grown by ``mask_buffer`` px (:data:`DEFAULT_MASK_BUFFER` by default), so
that the unmasked rim of a cloud is not compared as ground.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import quantize
from ..errors import BandError, EarthEmbedError, RasterInputError
from ..inputs.bandfiles import named_bands
from ..inputs.masks import MaskSpec
from ..inputs.reader import open_scene
from ..outputs.embeddings import open_embeddings
from .change_inputs import Grid, Provenance, provenance, scene_grid, write_scene_on_grid
from .fit import is_embedding_raster

EMB_A, EMB_B, WARPED_B = "embeddings_a.tif", "embeddings_b.tif", ".b_bands_on_a_grid.tif"
#: px the cloud/shadow mask of a scene embedded by ``change`` grows by (``--mask-buffer``).
DEFAULT_MASK_BUFFER = 0


def check_mask_buffer(mask_buffer: int | None) -> int:
    """The buffer to use (``None``: :data:`DEFAULT_MASK_BUFFER`), checked as ``embed``'s ``--mask-buffer`` is."""
    return MaskSpec.of(buffer=DEFAULT_MASK_BUFFER if mask_buffer is None else mask_buffer).buffer


def _encoder(opts: dict[str, Any], prov: list[Provenance]) -> tuple[Any, str, str | None, str]:
    """The encoder that embeds the scenes, its name and revision, and the storage dtype to write
    (``prov``: the provenance of the input given as embeddings, if any)."""
    from ..encoder import EarthEncoder
    from ..released import find_released

    name, revision = opts["model"], opts["revision"]
    if name is None and prov:
        name = prov[0].model
        revision = revision or (None if prov[0].revision == "none" else prov[0].revision)
    name = name or find_released("encoder")
    if name is None:
        raise EarthEmbedError(
            "A scene is given, so it must be embedded, but no --model is named and no released encoder is installed. "
            "Pass --model (Python: model=)."
        )
    try:
        encoder = EarthEncoder.from_pretrained(name, revision=revision)
    except EarthEmbedError as err:
        raise EarthEmbedError(
            f"The encoder {name!r} cannot be loaded to embed the scene(s) ({err}). Pass --model with the encoder's "
            "folder or Hub id (the one that wrote the other date's embeddings, if one is given as embeddings)."
        ) from err
    dtype = "int8" if prov and prov[0].quantization == quantize.RULE else "float16"
    opts["embed_precision"] = (prov[0].precision if prov else None) or "fp32"
    return encoder, str(name), revision, dtype


def _embed(
    encoder: Any, src: Any, dst: Path, name: str, revision: str | None, dtype: str, opts: dict, **kw: Any
) -> Path:
    from ..api import embed_raster

    return embed_raster(
        encoder, src, dst, model_id=name, revision=revision, dtype=dtype, progress=opts["progress"],
        device=opts["device"], precision=opts.get("embed_precision", "fp32"), mask_buffer=check_mask_buffer(opts.get("mask_buffer")), **kw,
    )  # fmt: skip


def embed_on_grid(
    encoder: Any, src: Any, grid: Grid, dst: Path, name: str, revision: str | None, dtype: str, opts: dict, notes: list
) -> Path:
    """Embed the scene ``src`` onto ``grid``: directly when it is on that grid, else from its bands resampled
    onto it (bilinear) in a temporary file beside ``dst`` (the DN offset settled on the original scene)."""
    own = scene_grid(src)
    if own.same_as(grid):
        return _embed(encoder, src, dst, name, revision, dtype, opts)
    _check_overlap(src, own, grid)
    from ..inputs.plausibility import inspect_input

    with open_scene(src, bands=encoder.bands) as scene:
        offset = inspect_input(scene, encoder, None)
    warped = dst.with_name(WARPED_B)
    try:
        write_scene_on_grid(src, encoder.bands, grid, warped)
        out = _embed(encoder, warped, dst, name, revision, dtype, opts, dn_offset=offset)
    except EarthEmbedError as err:  # named by the scene the user gave, not by the temporary file
        raise type(err)(str(err).replace(str(warped), f"{src} (resampled onto A's grid)")) from err
    finally:
        warped.unlink(missing_ok=True)
    notes.append(f"{src} is on another grid: its bands were resampled (bilinear) onto A's grid ({grid.describe()}) "
                 "before embedding")  # fmt: skip
    return out


def _check_overlap(src: Any, own: Grid, grid: Grid) -> None:
    """Refuse a B scene that covers none of A's grid (else its resampled bands would be all nodata)."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(own.crs, grid.crs, *own.bounds(), densify_pts=21)
    a_left, a_bottom, a_right, a_top = grid.bounds()
    if left >= a_right or right <= a_left or bottom >= a_top or top <= a_bottom:
        raise RasterInputError(
            f"B ({src}) does not overlap A: B covers {left:.6g}, {bottom:.6g} to {right:.6g}, {top:.6g} and A "
            f"{a_left:.6g}, {a_bottom:.6g} to {a_right:.6g}, {a_top:.6g} (in A's CRS {grid.crs}). Give two dates "
            "of the same ground."
        )


def check_scene_input(src: Any, side: str) -> None:
    """Refuse, with a message for ``change``, a single raster given as a date that is neither embeddings
    nor a scene: another earth-embed output (a class map, a change score), a one-band raster (a label
    raster), or a multi-band file whose bands are not named (``change`` has no ``--bands``)."""
    import rasterio

    p = Path(src) if isinstance(src, (str, Path)) else None
    if p is None or not p.is_file():
        return  # a folder or band files: the reader's own messages
    try:
        ds = rasterio.open(p)
    except rasterio.errors.RasterioIOError:
        return  # not a raster: the reader says so
    with ds:
        kind, count, names = ds.tags().get("KIND"), ds.count, named_bands(ds)
    takes = "change takes the embeddings of both dates, or two scenes with the model's bands"
    if kind:
        raise RasterInputError(f"{side} ({src}) is an earth-embed {kind!r} raster, not embeddings or a scene: {takes}.")
    if count == 1:
        raise RasterInputError(
            f"{side} ({src}) has one band, so it is neither embeddings nor a scene: {takes}. A label raster goes "
            "to --labels."
        )
    if names is None:
        raise BandError(
            f"{side} ({src}) has {count} bands whose descriptions do not name Sentinel-2 bands, and change has no "
            "--bands to name them: set the band descriptions (B02, B03, ...) or give a folder of per-band files "
            "(B02.tif ...)."
        )


def embedded_pair(a: Any, b: Any, tmp: Path, opts: dict[str, Any], notes: list[str]) -> tuple[Path, Path]:
    """Embedding rasters of both dates: the inputs themselves, or scenes embedded into ``tmp``."""
    a_emb, b_emb = is_embedding_raster(a), is_embedding_raster(b)
    if a_emb and b_emb:
        if opts.get("mask_buffer") is not None:
            notes.append(f"--mask-buffer {opts['mask_buffer']} is not used: A and B are embeddings (it grows the cloud "
                         "mask of a scene that change embeds)")  # fmt: skip
        return Path(a), Path(b)
    known = []
    for src, is_emb, side in ((a, a_emb, "A"), (b, b_emb, "B")):
        if not is_emb:
            check_scene_input(src, side)
        if is_emb:
            with open_embeddings(src) as e:
                known.append(provenance(e))
    encoder, name, revision, dtype = _encoder(opts, known)
    if a_emb:
        path_a = Path(a)
        with open_embeddings(path_a) as e:
            grid = Grid.of(e)
    else:
        path_a = _embed(encoder, a, tmp / EMB_A, name, revision, dtype, opts)
        grid = scene_grid(a)
        notes.append(f"A ({a}) was embedded with {name} into {path_a}{_masked(opts)}")
    if b_emb:
        return path_a, Path(b)
    path_b = embed_on_grid(encoder, b, grid, tmp / EMB_B, name, revision, dtype, opts, notes)
    notes.append(f"B ({b}) was embedded with {name} into {path_b}{_masked(opts)}")
    return path_a, path_b


def _masked(opts: dict[str, Any]) -> str:
    return f" (cloud/shadow mask auto, grown by {check_mask_buffer(opts.get('mask_buffer'))} px)"
