"""The one int8 rule for stored embeddings, fixed and independent of the scene (AlphaEarth's).

Each pixel's embedding is scaled to unit length, then every component ``v`` in [-1, 1] is stored as
the code ``q = sign(v) * round(127.5 * sqrt(|v|))`` clipped to [-127, 127]; ``-128`` is nodata.
Decoding is ``value = sign(q) * (|q| / 127.5) ** 2``. The square root spends more codes on small
components, where most of a unit vector's components lie. The same code means the same value in
every scene, tile and worker, so stores can be mosaicked and compared; no second pass is needed.

Readers find the rule by name: GeoTIFF tag ``EMBEDDING_QUANTIZATION`` and the Zarr attribute
``geoemb:quantization`` hold :data:`RULE`; :func:`decode` turns stored values back into float32
embeddings by that tag (float outputs pass through with NaN as nodata).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Name of the rule, written into every output that uses it.
RULE = "unit-sqrt-int8"
#: Stored code for "no embedding here" (the input was nodata).
NODATA = -128
#: Divisor of the codes (AlphaEarth's): code 127 decodes to (127 / 127.5) ** 2 ~ 0.992.
SCALE = 127.5
#: GeoTIFF tag naming the quantisation of an embedding raster.
TAG = "EMBEDDING_QUANTIZATION"
#: One-line description stored next to the rule's name.
DESCRIPTION = "unit-length vectors; code q in [-127, 127], value = sign(q) * (|q| / 127.5) ** 2; -128 = nodata"


def quantize(emb: np.ndarray, valid: np.ndarray | None = None, axis: int = 0) -> np.ndarray:
    """Float embeddings -> int8 codes by :data:`RULE` (vectors along ``axis``, default ``(D, H, W)``).

    Pixels where ``valid`` is False, or where any component is not finite, get :data:`NODATA` in
    every band. A zero vector stays zero (code 0).
    """
    x = np.asarray(emb, dtype=np.float32)
    finite = np.isfinite(x).all(axis=axis, keepdims=True)
    x = np.where(finite, x, 0.0)
    norm = np.sqrt(np.square(x, dtype=np.float64).sum(axis=axis, keepdims=True))
    unit = x / np.maximum(norm, 1e-12)
    q = np.sign(unit) * np.rint(SCALE * np.sqrt(np.abs(unit)))
    codes = np.clip(q, -127, 127).astype(np.int8)
    keep = finite
    if valid is not None:
        keep = keep & np.expand_dims(np.asarray(valid, dtype=bool), axis)
    return np.where(keep, codes, np.int8(NODATA))


def dequantize(codes: np.ndarray) -> np.ndarray:
    """int8 codes -> float32 values by :data:`RULE`; :data:`NODATA` becomes NaN."""
    q = np.asarray(codes)
    if q.dtype != np.int8:
        raise TypeError(f"codes must be int8, got {q.dtype}")
    a = q.astype(np.float32)
    value = np.sign(a) * np.square(np.abs(a) / np.float32(SCALE))
    return np.where(q == NODATA, np.float32(np.nan), value).astype(np.float32)


def valid_mask(codes: np.ndarray, axis: int = 0) -> np.ndarray:
    """True where a pixel holds an embedding (no band is :data:`NODATA`)."""
    return ~(np.asarray(codes) == NODATA).any(axis=axis)


def metadata() -> dict[str, str]:
    """Tags for a GeoTIFF written with this rule (readers dequantise by :data:`TAG`)."""
    return {TAG: RULE, "EMBEDDING_QUANTIZATION_RULE": DESCRIPTION, "EMBEDDING_NODATA": str(NODATA)}


def decode(data: np.ndarray, tags: Mapping[str, Any] | None = None) -> np.ndarray:
    """Stored embedding values -> float32 with NaN as nodata, by the output's tags.

    int8 data must carry ``tags[TAG] == RULE`` (files written by earth-embed since this rule);
    float data is returned as float32. Anything else raises a ``ValueError`` naming the fix.
    """
    arr = np.asarray(data)
    rule = (tags or {}).get(TAG)
    if arr.dtype == np.int8:
        if rule != RULE:
            raise ValueError(
                f"int8 embeddings without the {TAG}={RULE} tag (found {rule!r}) use an unknown scale; "
                "re-embed them with this version of earth-embed (earth-embed embed ... --dtype int8)."
            )
        return dequantize(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise ValueError(f"embeddings of dtype {arr.dtype} are not an earth-embed output (int8, float16 or float32).")
