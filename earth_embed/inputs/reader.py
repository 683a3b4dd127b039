"""Open a Sentinel-2 scene (multi-band GeoTIFF, folder or list of per-band files) as one band stack.

Every band is read window by window on the grid of the finest band (:class:`~earth_embed.inputs.scene.Scene`).
Coarser bands (20 m, 60 m) are resampled by georeference (bilinear, through a GDAL ``WarpedVRT``), so grids whose
origins differ by a fraction of a pixel line up correctly. Nothing reads a whole scene into memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Union

import rasterio
from rasterio.enums import Resampling

from ..bands import ALL_BANDS, RELEASE_BANDS, S2_BANDS, canonical_band_names
from ..errors import BandError, RasterInputError
from .bandfiles import RASTER_SUFFIXES, band_files, band_from_filename, check_same_scene, named_bands
from .opening import check_footprints, check_georeferenced, open_raster
from .pixel_grid import Grid, view_on_grid
from .safe import info_from_mapping, info_from_name, info_from_sidecars, is_safe, safe_band_files
from .scene import S2_NODATA, Scene, _BandSource

PathLike = Union[str, os.PathLike]  # noqa: UP007 (a runtime alias)


def _is_multiband(path: str) -> bool:
    """True for an existing raster file of more than one band."""
    if not os.path.isfile(path):
        return False
    try:
        with rasterio.open(path) as ds:
            return ds.count > 1
    except rasterio.errors.RasterioIOError:
        return False


def _open_multiband(path: str, bands: Sequence[str] | None) -> Scene:
    ds = open_raster(path)
    try:
        check_georeferenced(ds, path)
        named = named_bands(ds)
        if named is not None:
            if len(set(named)) != len(named):
                raise BandError(f"{path} names some bands twice ({named}); fix its band descriptions.")
            file_names, selection = named, (canonical_band_names(bands) if bands is not None else None)
        elif bands is None:
            example = RELEASE_BANDS if ds.count == len(RELEASE_BANDS) else ALL_BANDS[: ds.count]  # the model's bands
            raise RasterInputError(
                f"{path} has {ds.count} band(s) whose descriptions do not name Sentinel-2 bands "
                f"(descriptions: {list(ds.descriptions)}). Name each band in file order, e.g. CLI --bands "
                f"{' '.join(example)} (Python: bands={example!r}) if the file holds those, or set the band "
                "descriptions."
            )
        else:
            names = canonical_band_names(bands)
            if len(names) != ds.count:
                raise BandError(
                    f"{path} has {ds.count} band(s) but --bands (Python: bands=) lists {len(names)} "
                    f"({', '.join(names)}). List exactly one name per band of the file, in file order."
                )
            file_names, selection = names, None
        if selection is not None:
            missing = [b for b in selection if b not in file_names]
            if missing:
                raise BandError(
                    f"Missing band(s) {', '.join(missing)}: {path} has {', '.join(file_names)}. "
                    "Provide an input that includes them."
                )
            order = [file_names.index(b) for b in selection]
        else:
            order = list(range(len(file_names)))
        res = abs(ds.transform.a)
        sources = [_BandSource(file_names[i], path, ds, i + 1, res, False, ds.dtypes[i]) for i in order]
        nodata = S2_NODATA if ds.nodata is None else float(ds.nodata)
        scene = Scene(sources, [ds], ds.crs, ds.transform, ds.height, ds.width, nodata, path)
        scene.source = [os.path.abspath(path)]
        folder = os.path.dirname(os.path.abspath(path))
        scene.product = (
            info_from_mapping(ds.tags(), f"the tags of {path}")
            .merged(info_from_sidecars(folder))
            .merged(info_from_name(path))
        )
        return scene
    except Exception:
        ds.close()
        raise


def _open_band_files(files: dict[str, str], description: str, bands: Sequence[str] | None) -> Scene:
    check_same_scene(files, description)
    # stack order: canonical Sentinel-2 order, or the order asked for
    if bands is not None:
        wanted = canonical_band_names(bands)
        missing = [b for b in wanted if b not in files]
        if missing:
            raise BandError(
                f"Missing band(s) {', '.join(missing)}: {description} has {', '.join(b for b in ALL_BANDS if b in files)}. "
                "Provide files for them."
            )
    else:
        wanted = [b for b in ALL_BANDS if b in files]
    owned: list = []
    try:
        datasets = {}
        for b in wanted:
            ds = open_raster(files[b])
            owned.append(ds)
            check_georeferenced(ds, files[b])
            if ds.count != 1:
                raise RasterInputError(
                    f"{files[b]} has {ds.count} bands but its name says it is band {b} alone. Pass a multi-band "
                    "file on its own (not in a folder or list), or split it into one file per band."
                )
            datasets[b] = ds
        # The grid: the finest band of the whole product (not only of the bands asked for), so that
        # every band selection of one product gives the same grid; first in Sentinel-2 order among equals.
        nominal = min(files, key=lambda b: (S2_BANDS[b].resolution_m, ALL_BANDS.index(b)))
        if nominal not in datasets:
            ds = open_raster(files[nominal])
            owned.append(ds)
            check_georeferenced(ds, files[nominal])
            datasets[nominal] = ds
        check_footprints(datasets, files, nominal)
        ref_name = min(
            datasets, key=lambda b: (abs(datasets[b].transform.a) * abs(datasets[b].transform.e), ALL_BANDS.index(b))
        )
        ref = datasets[ref_name]
        nodata = S2_NODATA if ref.nodata is None else float(ref.nodata)
        sources = []
        warped_views = []
        grid = Grid.of(ref)
        for b in wanted:
            ds = datasets[b]
            res = abs(ds.transform.a)
            src_nodata = nodata if ds.nodata is None else ds.nodata
            view = view_on_grid(ds, grid, Resampling.bilinear, nodata, src_nodata=src_nodata, dtype="float32")
            warped = view is not ds
            if warped:
                warped_views.append(view)
            sources.append(_BandSource(b, files[b], view, 1, res, warped, ds.dtypes[0], ds if warped else None))
        # close the warped views before their datasets
        scene = Scene(sources, warped_views + owned, ref.crs, ref.transform, ref.height, ref.width, nodata, description)
        scene.product = info_from_mapping(ref.tags(), f"the tags of {files[ref_name]}")
        return scene
    except Exception:
        for ds in owned:
            ds.close()
        raise


def open_scene(src: PathLike | Sequence[PathLike], bands: Sequence[str] | None = None) -> Scene:
    """Open a Sentinel-2 scene as a stack of bands on the finest band's grid.

    ``src`` is (a) a multi-band raster whose band descriptions name the bands (``bands`` then picks
    and orders them) or whose bands are unnamed (``bands`` then names every band, in file order);
    (b) a folder of per-band files (``B02.tif``, ``s2_B8A.jp2``, ``T33UUU_..._B02.jp2``; files without
    a band token such as ``labels.tif`` are ignored); or (c) a list of per-band files. For (b) and
    (c) ``bands`` picks and orders bands; default: all found, in Sentinel-2 order (B01..B12, B8A
    after B08); (d) a Sentinel-2 SAFE product, folder or zip (bands under ``GRANULE/*/IMG_DATA``, L2A at
    each band's finest resolution). ``scene.product`` holds what the product says about itself
    (processing baseline, DN offset) from ``MTD_MSI*.xml``, ``source.json`` sidecars, GeoTIFF tags or
    the product name. Use as a context manager: ``with open_scene(path) as scene: scene.read(...)``.
    """
    if isinstance(bands, str):
        raise BandError(f"bands={bands!r} is a string; pass a list of band names such as ['B04', 'B03', 'B02'].")
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise RasterInputError(f"Input {path} does not exist; check the path.")
        if is_safe(path):
            files, product = safe_band_files(path)
            scene = _open_band_files(files, path, bands)
            scene.product = product
        elif os.path.isdir(path):
            files, description = band_files(path)
            scene = _open_band_files(files, description, bands)
            scene.product = scene.product.merged(info_from_sidecars(path)).merged(info_from_name(path))
        else:
            return _open_multiband(path, bands)
        scene.source = [os.path.abspath(path)]
        return scene
    if isinstance(src, Iterable):
        paths = [os.fspath(p) for p in src]
        if len(paths) == 1 and _is_multiband(paths[0]):  # one multi-band file given as a list
            return open_scene(paths[0], bands)
        files, description = band_files(paths)
        scene = _open_band_files(files, description, bands)
        folder = os.path.dirname(os.path.abspath(paths[0]))
        scene.product = scene.product.merged(info_from_sidecars(folder)).merged(info_from_name(paths[0]))
        scene.source = [os.path.abspath(p) for p in paths]
        return scene
    raise RasterInputError(
        f"Cannot open a scene from {type(src).__name__}; pass a file path, a folder or a list of band files."
    )


__all__ = ["RASTER_SUFFIXES", "S2_NODATA", "Scene", "band_from_filename", "open_scene"]
