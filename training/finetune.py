"""Land-cover fine-tuning of an EarthEncoder into an EarthSegmenter (the script; the recipe is training/recipe/).

    python training/finetune.py --data ../shared/data/labelled/brandenburg-osm \
        --init pretrained:runs/cpu/encoder --label-fraction 0.05 --seed 0 --output-dir runs/ft/pre-5-0
    python training/finetune.py --data ... --init random --norm-from runs/cpu/encoder ...   # same arch, random weights
    python training/finetune.py --data ... --init pretrained:runs/cpu/encoder --freeze-encoder   # linear probe

The flags build a :class:`training.recipe.finetune.FinetuneConfig` (flags left out keep its defaults);
:func:`training.recipe.finetune.finetune` runs it. The labelled folder is cut into train | val | test
blocks along x; model selection uses the validation block's mIoU (never the test block, never the loss).
Writes ``<output-dir>/segmenter/`` (``from_pretrained``-loadable) and ``<output-dir>/metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python training/finetune.py`: import `training` from the repository, not training/
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from training.evaluation.evaluate import format_metrics
from training.recipe.finetune import (
    BATCHNORM_MODES,
    LABEL_UNITS,
    SELECT_MODES,
    VAL_CHIPS,
    FinetuneConfig,
    FinetuneResult,
    finetune,
)


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    """The command line as a :class:`FinetuneConfig`; a flag left out keeps the dataclass's default."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS
    )
    p.add_argument("--data", required=True, help="labelled folder: B*.tif + labels.tif + classes.json")
    p.add_argument("--init", required=True, help="pretrained:PATH (encoder or segmenter folder) | random")
    p.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="linear probe: only the 1x1 classifier, fit as the standardised L-BFGS probe (training.evaluation.probe)",
    )
    p.add_argument(
        "--lp-ft",
        action="store_true",
        help="linear-probe-then-fine-tune: fit the classifier first as the frozen-encoder probe, then train "
        "the whole net (encoder at --encoder-lr)",
    )
    p.add_argument(
        "--batchnorm",
        choices=BATCHNORM_MODES,
        help="train (default): BatchNorm statistics follow each training batch; frozen: re-estimated once on the "
        "training block's images (no labels) before the probe head is fit, then held fixed while the weights train",
    )
    p.add_argument(
        "--label-fraction",
        type=float,
        help="share of training chips used, or of labelled pixels with --label-unit pixels (0, 1]; default 1",
    )
    p.add_argument(
        "--label-unit",
        choices=LABEL_UNITS,
        help="chips (default): the fraction is a share of whole training chips; pixels: every training chip, with "
        "that share of its labelled pixels kept (scattered point labels)",
    )
    p.add_argument("--seed", type=int, help="chip subset, initialisation and batch order (default 0)")
    p.add_argument("--arch", help="architecture for --init random (default unet-resnet18)")
    p.add_argument("--embed-dim", type=int, help="embedding size for --init random (default 64)")
    p.add_argument("--bands", nargs="+", help="bands for --init random (default the release bands)")
    p.add_argument(
        "--norm-from",
        help="encoder folder whose architecture, bands and normalisation --init random "
        "copies (weights stay random); default: statistics of the training chips",
    )
    p.add_argument("--steps", type=int, help="default 300")
    p.add_argument("--batch-size", type=int, help="default 8")
    p.add_argument("--lr", type=float, help="default 1e-3")
    p.add_argument("--encoder-lr", type=float, help="peak lr of the encoder's weights (default --lr)")
    p.add_argument("--probe-pixels", type=int, help="labelled pixels the probe head is fit on (default 20000)")
    p.add_argument("--weight-decay", type=float, help="default 1e-4")
    p.add_argument("--chip", type=int, help="default 64")
    p.add_argument("--test-fraction", type=float, help="default 0.3")
    p.add_argument("--val-fraction", type=float, help="default 0.15")
    p.add_argument("--gap", type=int, help="pixels between blocks (default one chip)")
    p.add_argument(
        "--val-chips",
        choices=VAL_CHIPS,
        help="what the validation mIoU scores: the validation block (default), or the training block's chips left "
        "out of --label-fraction (more chips; none at fraction 1)",
    )
    p.add_argument(
        "--eval-every", type=int, help="validation mIoU every N steps (model selection; 0 = final only; default 50)"
    )
    p.add_argument(
        "--select",
        choices=SELECT_MODES,
        help="val (default): keep the step with the best validation mIoU; last: keep the final step (fixed schedule)",
    )
    p.add_argument("--dn-offset", type=float, help="-1000 for processing baseline >= 04.00 (default 0)")
    p.add_argument("--threads", type=int, help="torch threads on CPU (0 = all cores, the default)")
    p.add_argument("--output-dir", help="default runs/finetune/<init>-<fraction>-<seed>")
    p.add_argument("--no-save", dest="save", action="store_false", help="do not write the segmenter folder")
    return FinetuneConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> FinetuneResult:
    """Parse the flags, fine-tune, print the test metrics."""
    cfg = parse_args(argv)
    result = finetune(cfg)
    print(
        f"{cfg.init} fraction {cfg.label_fraction:g} seed {cfg.seed}: {result['train_chips']} train chips, "
        f"selected step {result['selected_step']}, {result['wall_time_s']:.0f} s"
    )
    print(format_metrics(result["test"]))
    return result


if __name__ == "__main__":
    main()
