"""Fine-tuning runs as records, for drivers that keep a cache of finished runs (``label_efficiency.py``): what a
run starts from (:func:`start_key`, so a cache reuses a run only for the same start), the config of one LP-FT
or frozen-probe run (:func:`lpft_config`) and the record kept of it (:func:`run_record`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from training.recipe.finetune import FinetuneConfig, FinetuneResult


def lpft_config(
    data: str,
    settings: dict[str, Any],
    init: str,
    fraction: float,
    seed: int,
    encoders: dict,
    lr: float | None,
    val_chips: str = "val-block",
    batchnorm: str = "train",
    label_unit: str = "chips",
) -> FinetuneConfig:
    """One run on ``data`` with the fine-tuning ``settings`` (steps, batch_size, chip, threads, head_lr): LP-FT at
    encoder lr ``lr``, or the frozen probe (``init="linear_probe"``); the final step, nothing saved."""
    common = dict(
        data=data,
        label_fraction=fraction,
        seed=seed,
        save=False,
        label_unit=label_unit,
        val_chips=val_chips,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        chip=settings["chip"],
        threads=settings["threads"],
        select="last",
        eval_every=0,
        lr=settings["head_lr"],
    )
    if init == "linear_probe":
        return FinetuneConfig(init=f"pretrained:{encoders['pretrained']}", freeze_encoder=True, **common)
    tuned = dict(lp_ft=True, encoder_lr=lr, batchnorm=batchnorm, **common)
    if init == "random":  # same architecture, bands and normalisation as the dense encoder; weights random per seed
        return FinetuneConfig(init="random", norm_from=encoders["pretrained"], **tuned)
    return FinetuneConfig(
        init=f"pretrained:{encoders['image_level' if init == 'image_level' else 'pretrained']}", **tuned
    )


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to 7 significant digits (nested lists and dicts kept)."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def start_key(init: str, encoders: dict[str, str]) -> str:
    """What a fine-tune starts from, so ``runs.json`` reuses a run only for the same start.

    Pre-trained starts: the encoder's weights file (path and SHA-256). Random starts: the
    architecture, bands and normalisation they copy (the weights are random per seed), the
    normalisation rounded to 7 significant digits (float32's precision): two encoders whose
    measured statistics differ only in float64 noise give the same random start.
    """
    folder = Path(encoders["image_level" if init == "image_level" else "pretrained"])
    if init == "random":
        cfg = json.loads((folder / "config.json").read_text())
        spec = {k: cfg.get(k) for k in ("architecture", "bands", "embed_dim")}
        spec["normalization"] = rounded(cfg.get("normalization"))
        return "random:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]
    return f"{init}:{folder}:{digest}"


def run_record(init: str, start: str, fraction: float, seed: int, res: FinetuneResult) -> dict:
    """The record a driver keeps of one finished run: its start, fraction, seed and settings, and its test scores."""
    t = res["test"]
    return {
        "init": init,
        "start": start,
        "fraction": fraction,
        "seed": seed,
        "val_chips": res["val_chips_from"],
        "encoder_lr": None if res["freeze_encoder"] else res["encoder_lr"],
        "batchnorm": res["batchnorm"],
        "label_unit": res["label_unit"],
        "steps": res["steps"],
        "miou": t["miou"],
        "per_class_iou": t["per_class_iou"],
        "pixel_accuracy": t["pixel_accuracy"],
        "final_val_miou": res["final_val_miou"],
        "train_chips": res["train_chips"],
        "train_labelled_pixels": res["train_labelled_pixels"],
        "wall_time_s": res["wall_time_s"],
    }
