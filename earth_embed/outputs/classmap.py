"""Class-map GeoTIFFs: their tags and colour table (one convention for every writer), and a PNG with a legend."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import rasterio
from PIL import Image, ImageDraw

from ..errors import RasterInputError

#: Grey for classes given without a colour.
NO_COLOR = (128, 128, 128)


def class_map_style(
    classes: Sequence[str], colors: Sequence[Sequence[int]] | None = None
) -> tuple[dict[str, str], dict[int, tuple[int, int, int, int]]]:
    """Tags and colour table of a uint8 class map: class ``i`` is stored as ``i + 1``, 0 is nodata.

    Tags: ``KIND=classes``, ``CLASS_NAMES`` (JSON, index = stored value), ``CLASS_<value>``, ``NODATA_VALUE``.
    """
    if len(classes) > 254:
        raise RasterInputError(f"{len(classes)} classes do not fit a uint8 map (max 254).")
    tags = {"KIND": "classes", "CLASS_NAMES": json.dumps(["nodata", *classes]), "NODATA_VALUE": "0"}
    tags.update({f"CLASS_{i + 1}": str(c) for i, c in enumerate(classes)})
    colors = list(colors or [NO_COLOR] * len(classes))
    colormap = {0: (0, 0, 0, 0), **{i + 1: (*(int(v) for v in c[:3]), 255) for i, c in enumerate(colors)}}
    return tags, colormap  # type: ignore[return-value]


def landcover_png(map_tif: str | os.PathLike, out_png: str | os.PathLike, max_size: int = 1024) -> str:
    """Render the class map with its colour table, plus a legend of class names and pixel shares."""
    with rasterio.open(map_tif) as src:
        names = json.loads(src.tags().get("CLASS_NAMES", "null") or "null")
        if src.count != 1 or names is None:
            raise RasterInputError(
                f"{map_tif} is not a land-cover map written by classify_raster "
                "(one band and a CLASS_NAMES tag); run `earth-embed classify` first."
            )
        factor = max(1, int(np.ceil(max(src.height, src.width) / max_size)))
        classes = src.read(
            1,
            out_shape=(src.height // factor or 1, src.width // factor or 1),
            resampling=rasterio.enums.Resampling.nearest,
        )
        colormap = src.colormap(1)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for value, rgba in colormap.items():
        lut[value] = rgba[:3]
    panel = Image.fromarray(lut[classes])
    counts = np.bincount(classes.ravel(), minlength=len(names))
    valid = max(1, int(counts[1:].sum()))
    row_h = 18
    legend = Image.new("RGB", (240, max(panel.height, row_h * len(names) + 10)), "white")
    draw = ImageDraw.Draw(legend)
    for value, name in enumerate(names):
        if value == 0:
            continue
        y = 5 + row_h * (value - 1)
        draw.rectangle([5, y, 20, y + 12], fill=tuple(int(v) for v in lut[value]), outline="black")
        draw.text((28, y), f"{value} {name} ({100 * counts[value] / valid:.1f} %)", fill="black")
    out = Image.new("RGB", (panel.width + legend.width, max(panel.height, legend.height)), "white")
    out.paste(panel, (0, 0))
    out.paste(legend, (panel.width, 0))
    tmp = f"{out_png}.tmp.png"
    out.save(tmp)
    os.replace(tmp, out_png)
    return str(out_png)
