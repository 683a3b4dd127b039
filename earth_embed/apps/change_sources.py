"""The embeddings ``earth-embed change`` compares: given as embedding rasters, or made here from scenes.

A scene is embedded with one model for both dates: ``--model``, else the model named by the other input
when that one is an embedding raster, else the released encoder. The first date is embedded on its own grid;
the second is embedded on the first's grid, its bands resampled by georeference first when its grid differs
(:func:`~.change_inputs.write_scene_on_grid`). The storage follows the other input (int8 when it is int8,
else float16), and so does the precision (fp32 when it records none), so that the two always compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import quantize
from ..errors import EarthEmbedError
from ..inputs.reader import open_scene
from ..outputs.embeddings import open_embeddings
from .change_inputs import Grid, Provenance, provenance, scene_grid, write_scene_on_grid
from .fit import is_embedding_raster

EMB_A, EMB_B, WARPED_B = "embeddings_a.tif", "embeddings_b.tif", ".b_bands_on_a_grid.tif"


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
        device=opts["device"], precision=opts.get("embed_precision", "fp32"), **kw,
    )  # fmt: skip


def embed_on_grid(
    encoder: Any, src: Any, grid: Grid, dst: Path, name: str, revision: str | None, dtype: str, opts: dict, notes: list
) -> Path:
    """Embed the scene ``src`` onto ``grid``: directly when it is on that grid, else from its bands resampled
    onto it (bilinear) in a temporary file beside ``dst`` (the DN offset settled on the original scene)."""
    if scene_grid(src).same_as(grid):
        return _embed(encoder, src, dst, name, revision, dtype, opts)
    from ..inputs.plausibility import inspect_input

    with open_scene(src, bands=encoder.bands) as scene:
        offset = inspect_input(scene, encoder, None)
    warped = dst.with_name(WARPED_B)
    try:
        write_scene_on_grid(src, encoder.bands, grid, warped)
        out = _embed(encoder, warped, dst, name, revision, dtype, opts, dn_offset=offset)
    finally:
        warped.unlink(missing_ok=True)
    notes.append(f"{src} is on another grid: its bands were resampled (bilinear) onto A's grid ({grid.describe()}) "
                 "before embedding")  # fmt: skip
    return out


def embedded_pair(a: Any, b: Any, tmp: Path, opts: dict[str, Any], notes: list[str]) -> tuple[Path, Path]:
    """Embedding rasters of both dates: the inputs themselves, or scenes embedded into ``tmp``."""
    a_emb, b_emb = is_embedding_raster(a), is_embedding_raster(b)
    if a_emb and b_emb:
        return Path(a), Path(b)
    known = []
    for src, is_emb in ((a, a_emb), (b, b_emb)):
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
        notes.append(f"A ({a}) was embedded with {name} into {path_a}")
    if b_emb:
        return path_a, Path(b)
    path_b = embed_on_grid(encoder, b, grid, tmp / EMB_B, name, revision, dtype, opts, notes)
    notes.append(f"B ({b}) was embedded with {name} into {path_b}")
    return path_a, path_b
