"""The one int8 rule for stored embeddings, fixed and independent of the scene (TESSERA's per-pixel scale).

Each pixel's embedding ``v`` is stored as int8 codes ``q = round(v / s)`` in [-127, 127] and one float32
scale per pixel ``s = max_d |v_d| / 127``; decoding is ``value = q * s``. ``-128`` in every band (and a
NaN scale) is nodata. The rule keeps each vector's length, which this encoder's embeddings need:
AlphaEarth's unit-length rule (codes of the unit vector, no scale) loses 0.58 linear-probe mIoU points
on brandenburg-osm against float32, this rule gains 0.04 (``docs/archive/results-notebook.md``, "Stored int8
embeddings"; ``training/experiments/quantization_probe.py``). The codes alone are proportional to the
vector, so cosine similarity on them needs no scale. A code means the same value in every scene, tile
and worker (its scale travels with it), so stores can be mosaicked; no second pass is needed.

Readers find the rule by name: GeoTIFF tag ``EMBEDDING_QUANTIZATION`` and the Zarr attribute
``geoemb:quantization`` (the draft convention's ``per_pixel_scale`` method with an ``array`` scale named
:data:`SCALES_NAME`) hold it; :func:`decode` turns stored values back into float32 by those tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: Name of the rule, written into every output that uses it.
RULE = "pixel-scale-int8"
#: Stored code for "no embedding here" (the input was nodata); its scale is NaN.
NODATA = -128
#: Largest code magnitude: the largest component of each vector is stored as +-127.
QMAX = 127
#: Name of the per-pixel scale array (Zarr) or raster (GeoTIFF/COG sidecar) next to the codes.
SCALES_NAME = "scales"
#: GeoTIFF tag naming the quantisation of an embedding raster.
TAG = "EMBEDDING_QUANTIZATION"
#: What the rule costs, as measured (docs/performance.md, "Stored as int8"): stored with every output.
MEASURED = {
    "dataset": "brandenburg-osm",
    "model": "earth-embed-s2-unet-r18s16",
    "linear_probe_miou_change_points": -0.04,
    "relative_error_mean": 0.0057,
    "relative_error_max": 0.0105,
    "command": "python training/experiments/quantization_probe.py --encoder models/earth-embed-s2-unet-r18s16",
    "date": "2026-12-03",
}
#: One-line description stored next to the rule's name.
DESCRIPTION = (
    "per-pixel scale (TESSERA): code q in [-127, 127], scale s = max|v| / 127 (float32, one per pixel), "
    "value = q * s; code -128 / scale NaN = nodata"
)


def quantize_tensor(
    emb: torch.Tensor, valid: torch.Tensor | None = None, dim: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule on a tensor, on its own device (the one implementation; :func:`quantize` wraps it).

    Float embeddings (vectors along ``dim``) -> ``(codes, scales)``: int8 codes with the shape of ``emb``,
    float32 scales with ``dim`` removed. Pixels where ``valid`` is False, or where any component is not
    finite, get :data:`NODATA` in every band and a NaN scale. A zero vector stays zero (codes 0, scale 0).
    """
    x = emb.float()
    scale = x.abs().amax(dim=dim, keepdim=True) / QMAX  # NaN or inf where any component is not finite
    keep = torch.isfinite(scale)
    if valid is not None:
        keep = keep & valid.to(device=x.device, dtype=torch.bool).unsqueeze(dim)
    divisor = torch.where(scale > 0, scale, 1.0)
    if bool(keep.all()):  # every pixel kept (the usual unit): the same codes in two fewer passes over the floats
        return torch.div(x, divisor).round_().clamp_(-QMAX, QMAX).to(torch.int8), scale.squeeze(dim)
    q = torch.round(x / divisor).clamp_(-QMAX, QMAX)
    codes = torch.where(keep, q.nan_to_num_(0.0).to(torch.int8), NODATA)  # masked pixels: any code, then nodata
    scales = torch.where(keep, scale, torch.nan)
    return codes, scales.squeeze(dim)


def quantize(emb: np.ndarray, valid: np.ndarray | None = None, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float embeddings -> ``(codes, scales)`` by :data:`RULE` (vectors along ``axis``, default ``(D, H, W)``).

    ``codes`` is int8 with the shape of ``emb``; ``scales`` is float32 with ``axis`` removed; nodata as in
    :func:`quantize_tensor`, which computes them (multi-threaded; no copy of ``emb`` when it is float32).
    """
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    mask = None if valid is None else torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))
    with torch.inference_mode():
        codes, scales = quantize_tensor(x, mask, dim=axis)
    return codes.numpy(), scales.numpy()


def dequantize(codes: np.ndarray, scales: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(codes, scales)`` -> float32 values by :data:`RULE`; :data:`NODATA` becomes NaN."""
    q = np.asarray(codes)
    if q.dtype != np.int8:
        raise TypeError(f"codes must be int8, got {q.dtype}")
    s = np.expand_dims(np.asarray(scales, dtype=np.float32), axis)
    value = q.astype(np.float32) * s
    return np.where(q == NODATA, np.float32(np.nan), value).astype(np.float32)


def valid_mask(codes: np.ndarray, axis: int = 0) -> np.ndarray:
    """True where a pixel holds an embedding (no band is :data:`NODATA`)."""
    return ~(np.asarray(codes) == NODATA).any(axis=axis)


def metadata() -> dict[str, str]:
    """Tags for a GeoTIFF written with this rule (readers dequantise by :data:`TAG`)."""
    return {TAG: RULE, "EMBEDDING_QUANTIZATION_RULE": DESCRIPTION, "EMBEDDING_NODATA": str(NODATA)}


def geoemb_quantization() -> dict[str, Any]:
    """The rule as the draft ``geoemb:quantization`` object (Zarr attribute, STAC ``emb:quantization``)."""
    return {
        "method": "per_pixel_scale",
        "original_dtype": "float32",
        "quantized_dtype": "int8",
        "scale": {"type": "array", "array_name": SCALES_NAME, "nodata": "NaN"},
        "nodata": NODATA,
        "rule": RULE,
        "description": DESCRIPTION,
        "measured": dict(MEASURED),
    }


def decode(data: np.ndarray, tags: Mapping[str, Any] | None = None, scales: np.ndarray | None = None) -> np.ndarray:
    """Stored embedding values -> float32 with NaN as nodata, by the output's tags.

    int8 data must carry ``tags[TAG] == RULE`` and come with its per-pixel ``scales``; float data is
    returned as float32. Anything else raises a ``ValueError`` naming the fix.
    """
    arr = np.asarray(data)
    rule = (tags or {}).get(TAG)
    if arr.dtype == np.int8:
        if rule != RULE:
            raise ValueError(
                f"int8 embeddings without the {TAG}={RULE} tag (found {rule!r}) use an unknown scale; "
                "re-embed them with this version of earth-embed."
            )
        if scales is None:
            raise ValueError(
                f"int8 embeddings by {RULE} need their per-pixel scales: pass the '{SCALES_NAME}' array "
                "(Zarr) or the scales raster written beside the codes (COG)."
            )
        return dequantize(arr, scales)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise ValueError(f"embeddings of dtype {arr.dtype} are not an earth-embed output (int8, float16 or float32).")
