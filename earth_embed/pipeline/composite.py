"""One embedding per pixel from its clear observations over a period: ``earth-embed composite``.

Reads the acquisition layers of a region store written with ``keep="all-dates"`` (each layer already nodata where
its scene was masked as cloud or shadow), keeps the layers dated within ``[start, end]``, and per pixel combines
the clear observations by a rule (:data:`RULES`): ``mean`` of the decoded vectors (the default, chosen by
measurement in docs/results/cloud_masks.md), per-dimension ``median``, or the ``medoid`` (the observation closest,
in summed Euclidean distance, to the others). The output is an int8 embedding GeoTIFF with its scales file, like
every ``earth-embed embed`` output (so ``open_embeddings``, ``fit``, ``similar``, ``cluster`` and ``change`` read
it), plus ``NAME.observations.tif``: band 1 the number of clear observations, band 2 the spread (mean Euclidean
distance of the observations from the composite; 0 with one observation). Pixels without one clear observation
are nodata. Memory is bounded by one window of all layers.
"""

from __future__ import annotations

import os
import uuid
import warnings
from datetime import date as Date
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from .. import quantize
from ..errors import RasterInputError
from ..outputs.embeddings import RUN_TAG, WINDOW, ZarrEmbeddings
from ..outputs.geotiff import GeoTiffWriter, band_names, check_output_path, scales_path
from ..outputs.provenance import relative_href
from ..outputs.zarr_dates import DATES_ATTR
from ..version import __version__

#: Composite rules; the first is the default (docs/results/cloud_masks.md).
RULES = ("mean", "median", "medoid")
DEFAULT_RULE = "mean"


def observations_path(dst: str | os.PathLike) -> Path:
    """``NAME.observations.tif`` beside the composite ``NAME.tif``."""
    p = Path(dst)
    return p.with_name(p.stem + ".observations" + p.suffix)


def combine(stack: np.ndarray, rule: str = DEFAULT_RULE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``stack`` (T, D, h, w) float32, NaN where a layer has no clear observation -> (composite (D, h, w) with NaN
    where no layer is clear, observation count (h, w), spread (h, w))."""
    if rule not in RULES:
        raise RasterInputError(f"rule={rule!r} is not a composite rule; use one of {', '.join(RULES)}.")
    clear = np.isfinite(stack).all(axis=1)  # (T, h, w)
    count = clear.sum(axis=0)
    x = np.where(clear[:, None], stack, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 'Mean of empty slice': no observation is NaN by design
        if rule == "mean":
            out = np.nanmean(x, axis=0)
        elif rule == "median":
            out = np.nanmedian(x, axis=0)
        else:  # medoid: the observation with the smallest summed distance to the pixel's other observations
            filled = np.nan_to_num(x)
            d = np.sqrt(((filled[:, None] - filled[None]) ** 2).sum(axis=2))  # (T, T, h, w)
            d = np.where(clear[:, None] & clear[None], d, 0.0).sum(axis=1)
            d = np.where(clear, d, np.inf)
            pick = d.argmin(axis=0)  # (h, w)
            out = np.take_along_axis(filled, pick[None, None], axis=0)[0]
        out = np.where(count > 0, out, np.nan).astype(np.float32)
        dist = np.sqrt(((x - out[None]) ** 2).sum(axis=1))  # (T, h, w), NaN where not clear
        spread = np.where(count > 0, np.nanmean(np.where(clear, dist, np.nan), axis=0), np.nan)
    return out, count.astype(np.float32), spread.astype(np.float32)


def _period(dates: list[str], start: str | None, end: str | None) -> list[str]:
    def day(text: str | None, what: str) -> Date | None:
        if text is None:
            return None
        try:
            return Date.fromisoformat(str(text))
        except ValueError as err:
            raise RasterInputError(f"--{what} {text!r} is not a date; write it as YYYY-MM-DD.") from err

    lo, hi = day(start, "start"), day(end, "end")
    if lo and hi and lo > hi:
        raise RasterInputError(f"--start {start} is after --end {end}; swap them.")
    chosen = [
        d for d in dates if (lo is None or Date.fromisoformat(d) >= lo) and (hi is None or Date.fromisoformat(d) <= hi)
    ]
    if not chosen:
        raise RasterInputError(
            f"no acquisition layer is dated within {start or '...'} to {end or '...'}; the store's layers are "
            f"{', '.join(dates)}."
        )
    return chosen


def _group(store: Path, group: str | None) -> str:
    from ..outputs.zarr_groups import store_groups

    groups = store_groups(store)
    if group is None:
        if len(groups) != 1:
            raise RasterInputError(
                f"{store} has {len(groups)} CRS groups ({', '.join(groups)}); pick one with --group (Python: group=)."
            )
        return groups[0]
    if group not in groups:
        raise RasterInputError(f"{store} has no group {group!r}; its groups are {', '.join(groups)}.")
    return group


def composite(
    store: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    start: str | None = None,
    end: str | None = None,
    rule: str = DEFAULT_RULE,
    group: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the composite of the acquisition layers of ``store`` (``keep="all-dates"``) dated within
    ``[start, end]`` (``YYYY-MM-DD``, inclusive; None: open-ended) to the int8 GeoTIFF ``dst`` (+ its scales file
    and ``NAME.observations.tif``: clear-observation count and spread). ``rule``: one of :data:`RULES`. ``group``:
    the store's CRS group (default its only one). Returns ``dst``."""
    import zarr

    if rule not in RULES:
        raise RasterInputError(f"--rule {rule!r} is not known; use one of {', '.join(RULES)}.")
    check_output_path(dst, overwrite)
    root = Path(store)
    if not (root / "zarr.json").is_file():
        raise RasterInputError(
            f"{root} is not a region store; make one with `earth-embed embed-region --keep all-dates`."
        )
    key = _group(root, group)
    recorded: Any = zarr.open_group(root / key, mode="r").attrs.get(DATES_ATTR) or []
    dates = [str(d) for d in recorded]
    if not dates:
        raise RasterInputError(
            f"group {key} of {root} keeps no acquisition layers (only the latest mosaic); embed the region with "
            "--keep all-dates to composite it."
        )
    chosen = _period(dates, start, end)
    layers = [ZarrEmbeddings(root, key, d) for d in chosen]
    first = layers[0]
    run_id = str(uuid.uuid4())
    tags = {
        "KIND": "embeddings",
        "EARTH_EMBED_VERSION": __version__,
        "MODEL": first.tags.get("EMBEDDING_MODEL", "unknown"),
        "INPUT": f"{root.resolve()}/{key}",
        "COMPOSITE_RULE": rule,
        "COMPOSITE_START": start or chosen[0],
        "COMPOSITE_END": end or chosen[-1],
        "COMPOSITE_DATES": ",".join(chosen),
        "COMPOSITE_OBSERVATIONS_FILE": observations_path(dst).name,
        "EMBED_DIM": str(first.dim),
        "OUTPUT_DTYPE": "int8",
        "CREATED": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **quantize.metadata(),
        "EMBEDDING_SCALES_FILE": scales_path(dst).name,
        RUN_TAG: run_id,
    }
    model = first.model  # the encoder's local folder when the store records one that exists here
    if model and Path(model).is_dir():  # fit saves encoder + head, so it must find the encoder again
        tags["EMBEDDING_MODEL_PATH"] = relative_href(model, Path(dst).parent)
    geo = dict(height=first.height, width=first.width, crs=first.crs, transform=first.transform, overwrite=overwrite)
    try:
        with (
            GeoTiffWriter(
                dst, count=first.dim, dtype="int8", descriptions=band_names(first.dim), tags=tags, **geo
            ) as codes_w,
            GeoTiffWriter(
                scales_path(dst),
                count=1,
                dtype="float32",
                descriptions=["scale"],
                tags={RUN_TAG: run_id, "KIND": "embedding-scales"},
                **geo,
            ) as scales_w,
            GeoTiffWriter(
                observations_path(dst),
                count=2,
                dtype="float32",
                descriptions=["clear_observations", "spread"],
                tags={RUN_TAG: run_id, "KIND": "composite-observations", "COMPOSITE_RULE": rule},
                require_valid=False,
                **geo,
            ) as obs_w,
        ):
            for r in range(0, first.height, WINDOW):
                for c in range(0, first.width, WINDOW):
                    win = Window(c, r, min(WINDOW, first.width - c), min(WINDOW, first.height - r))
                    stack = np.stack([layer.read(win) for layer in layers])
                    values, count, spread = combine(stack, rule)
                    q, s = quantize.quantize(np.nan_to_num(values), np.isfinite(values).all(axis=0))
                    codes_w.write(r, c, q)
                    scales_w.write(r, c, s[None])
                    obs_w.write(r, c, np.stack([count, np.nan_to_num(spread)]))
    finally:
        for layer in layers:
            layer.close()
    return Path(dst)
