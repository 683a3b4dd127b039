"""Land-cover fine-tuning of an EarthEncoder into an EarthSegmenter (or a frozen-encoder linear probe).

    python training/finetune.py --data ../shared/data/labelled/brandenburg-osm \
        --init pretrained:runs/cpu/encoder --label-fraction 0.05 --seed 0 --output-dir runs/ft/pre-5-0
    python training/finetune.py --data ... --init random --norm-from runs/cpu/encoder ...   # same arch, random weights
    python training/finetune.py --data ... --init pretrained:runs/cpu/encoder --freeze-encoder   # linear probe

The labelled folder is cut into train | val | test blocks along x (``region_split``); the
``--label-fraction`` subset of training chips (or, with ``--label-unit pixels``, of the labelled pixels of every
training chip) is drawn with ``--seed``. Model selection uses the
validation block's mIoU (never the test block, never the loss). Writes ``<output-dir>/segmenter/``
(``from_pretrained``-loadable) and ``<output-dir>/metrics.json`` (test mIoU, per-class IoU,
confusion matrix).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from earth_embed import EarthEncoder, EarthSegmenter
from earth_embed.bands import RELEASE_BANDS
from earth_embed.errors import ConfigError
from training.data.labelled import (
    IGNORE_INDEX,
    LabelledChips,
    LabelledScene,
    label_fraction_subset,
    region_split,
    sparse_labels,
)
from training.evaluation.evaluate import evaluate_model, format_metrics, normalised
from training.evaluation.features import reestimate_batchnorm
from training.evaluation.probe import fit_probe

#: What ``--val-chips`` scores: the validation block, or the training chips a label fraction leaves out.
VAL_CHIPS = ("val-block", "unused-train")
#: What ``--label-fraction`` is a share of: whole training chips, or the labelled pixels of every training chip.
LABEL_UNITS = ("chips", "pixels")
#: How fine-tuning treats BatchNorm statistics (``--batchnorm``).
BATCHNORM_MODES = ("train", "frozen")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        default="train",
        help="train: BatchNorm statistics follow each training batch; frozen: re-estimated once on the training "
        "block's images (no labels) before the probe head is fit, then held fixed while the weights train",
    )
    p.add_argument(
        "--label-fraction",
        type=float,
        default=1.0,
        help="share of training chips used, or of labelled pixels with --label-unit pixels (0, 1]",
    )
    p.add_argument(
        "--label-unit",
        choices=LABEL_UNITS,
        default="chips",
        help="chips: the fraction is a share of whole training chips; pixels: every training chip, with that share "
        "of its labelled pixels kept (scattered point labels)",
    )
    p.add_argument("--seed", type=int, default=0, help="chip subset, initialisation and batch order")
    p.add_argument("--arch", default="unet-resnet18", help="architecture for --init random")
    p.add_argument("--embed-dim", type=int, default=64, help="embedding size for --init random")
    p.add_argument("--bands", nargs="+", default=list(RELEASE_BANDS), help="bands for --init random")
    p.add_argument(
        "--norm-from",
        help="encoder folder whose architecture, bands and normalisation --init random "
        "copies (weights stay random); default: statistics of the training chips",
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--encoder-lr", type=float, default=None, help="peak lr of the encoder's weights (default --lr)")
    p.add_argument("--probe-pixels", type=int, default=20000, help="labelled pixels the probe head is fit on")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--chip", type=int, default=64)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--gap", type=int, default=None, help="pixels between blocks (default one chip)")
    p.add_argument(
        "--val-chips",
        choices=VAL_CHIPS,
        default="val-block",
        help="what the validation mIoU scores: the validation block, or the training block's chips left out of "
        "--label-fraction (more chips; none at fraction 1)",
    )
    p.add_argument(
        "--eval-every", type=int, default=50, help="validation mIoU every N steps (model selection; 0 = final only)"
    )
    p.add_argument(
        "--select",
        choices=("val", "last"),
        default="val",
        help="val: keep the step with the best validation mIoU; last: keep the final step (fixed schedule)",
    )
    p.add_argument("--dn-offset", type=float, default=0.0, help="-1000 for processing baseline >= 04.00")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = all cores)")
    p.add_argument("--output-dir", default=None, help="default runs/finetune/<init>-<fraction>-<seed>")
    p.add_argument("--no-save", action="store_true", help="do not write the segmenter folder (experiments)")
    return p.parse_args(argv)


def build_encoder(args: argparse.Namespace, train_chips: LabelledChips | None) -> EarthEncoder:
    """The starting encoder for ``--init``."""
    if args.init.startswith("pretrained:"):
        return EarthEncoder.from_pretrained(args.init.split(":", 1)[1]).train()
    if args.init != "random":
        raise ConfigError(f"--init must be 'pretrained:PATH' or 'random', got {args.init!r}")
    torch.manual_seed(args.seed)
    if args.norm_from:
        ref = EarthEncoder.from_pretrained(args.norm_from).config
        n = ref.normalization
        return EarthEncoder.new(ref.architecture, bands=ref.bands, embed_dim=ref.embed_dim, mean=n.mean, std=n.std)
    if train_chips is None:
        raise ConfigError("--init random with the probe start needs training chips")
    x, _ = train_chips.stacked()
    valid = (x != 0).any(1, keepdim=True).expand_as(x)
    xs = x.transpose(0, 1)[valid.transpose(0, 1)].reshape(x.shape[1], -1)
    return EarthEncoder.new(
        args.arch,
        bands=args.bands,
        embed_dim=args.embed_dim,
        mean=xs.mean(1).tolist(),
        std=xs.std(1).clamp(min=1e-6).tolist(),
    )


@torch.no_grad()
def fit_linear_head(seg: EarthSegmenter, x: torch.Tensor, y: torch.Tensor, max_pixels: int, seed: int) -> None:
    """Set ``seg.classifier`` to the standardised L-BFGS linear probe (``training.evaluation.probe.fit_probe``) of the
    frozen encoder's embeddings (BatchNorm as stored) of normalised chips ``x`` with labels ``y``.

    The probe's standardisation is folded into the 1x1 convolution, so the segmenter stays a plain
    encoder + classifier. At most ``max_pixels`` labelled pixels, drawn with ``seed``.
    """
    seg.encoder.eval()
    feats = torch.cat([seg.encoder(x[i : i + 16]).float() for i in range(0, x.shape[0], 16)])
    f = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    yf = y.reshape(-1)
    keep = torch.nonzero(yf != IGNORE_INDEX)[:, 0]
    if len(keep) == 0:
        raise ConfigError("the training chips hold no labelled pixel; use a larger --label-fraction")
    if len(keep) > max_pixels:
        keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))[:max_pixels]]
    mu, sd = f[keep].mean(0), f[keep].std(0).clamp(min=1e-6)
    with torch.enable_grad():
        probe = fit_probe((f[keep] - mu) / sd, yf[keep], seg.classifier.out_channels, seed=seed)
    w = probe.weight / sd  # (K, D): logits = W (f - mu) / sd + b
    seg.classifier.weight.copy_(w[:, :, None, None])
    cast(torch.Tensor, seg.classifier.bias).copy_(probe.bias - w @ mu)


def hold_batchnorm(model: torch.nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode: running statistics fixed, affine weights still train."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def batchnorm_on_images(encoder: EarthEncoder, x: torch.Tensor, batch_size: int = 16) -> EarthEncoder:
    """``encoder`` with its BatchNorm statistics re-estimated on the normalised images ``x`` (N, C, H, W):
    the average of the statistics of batches of ``batch_size`` (no labels)."""
    dev = next(encoder.parameters()).device
    return reestimate_batchnorm(encoder, (x[i : i + batch_size].to(dev) for i in range(0, x.shape[0], batch_size)))


def _d4(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip/rot90 for a chip batch and its labels (per sample)."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        k = int(torch.randint(0, 4, (1,), generator=g))
        xi, yi = torch.rot90(x[i], k, (1, 2)), torch.rot90(y[i], k, (0, 1))
        if bool(torch.rand(1, generator=g) < 0.5):
            xi, yi = xi.flip(2), yi.flip(1)
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune (or probe), select on validation mIoU, evaluate on the test block; returns the metrics."""
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scene = LabelledScene(args.data, dn_offset=args.dn_offset)
    blocks = region_split(scene, chip=args.chip, test=args.test_fraction, val=args.val_fraction, gap=args.gap)
    by_chip = args.label_unit == "chips"
    subset = label_fraction_subset(blocks["train"], args.label_fraction if by_chip else 1.0, args.seed)
    bands = args.bands
    if args.init.startswith("pretrained:"):
        bands = EarthEncoder.from_pretrained(args.init.split(":", 1)[1]).bands
    elif args.norm_from:
        bands = EarthEncoder.from_pretrained(args.norm_from).bands
    train = LabelledChips(scene, subset, bands)
    encoder = build_encoder(args, train)
    torch.manual_seed(args.seed)
    seg = EarthSegmenter.from_encoder(encoder, scene.classes, scene.colors).to(device)
    seg = seg.to(memory_format=torch.channels_last)
    norm = seg.config.normalization
    x_all, y_all = train.stacked()
    if not by_chip:
        y_all = sparse_labels(y_all, args.label_fraction, args.seed)
    x_all = normalised(x_all, norm.mean, norm.std)
    val_chips = blocks["val"] if args.val_chips == "val-block" else [c for c in blocks["train"] if c not in subset]
    if args.val_chips == "unused-train" and not val_chips:
        raise ConfigError(
            f"--val-chips unused-train: label fraction {args.label_fraction} of {args.label_unit} uses every training "
            "chip; pass a smaller --label-fraction with --label-unit chips, or --val-chips val-block"
        )
    val = LabelledChips(scene, val_chips, bands) if val_chips else None
    g = torch.Generator().manual_seed(args.seed)  # batch order and flips: the same for every start of a seed
    steps = 0 if args.freeze_encoder else args.steps
    if args.batchnorm == "frozen":  # the training block's images, labelled or not: no label is read
        block = normalised(LabelledChips(scene, blocks["train"], bands).stacked()[0], norm.mean, norm.std)
        seg.encoder = batchnorm_on_images(seg.encoder, block).train()
    if args.freeze_encoder or args.lp_ft:
        fit_linear_head(seg, x_all.to(device), y_all, args.probe_pixels, args.seed)
    if args.freeze_encoder:
        seg.encoder.requires_grad_(False)
    head = list(seg.classifier.parameters())
    params = [
        {"params": list(seg.encoder.parameters()), "lr": args.lr if args.encoder_lr is None else args.encoder_lr},
        {"params": head, "lr": args.lr},
    ]
    opt = torch.optim.AdamW(params, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[p["lr"] for p in params], total_steps=max(steps, 1), pct_start=0.1
    )
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    best: tuple[float, dict[str, Any] | None, int] = (-1.0, None, 0)
    history = []
    for step in range(1, steps + 1):
        seg.train()
        if args.batchnorm == "frozen":
            hold_batchnorm(seg)
        idx = torch.randint(0, x_all.shape[0], (args.batch_size,), generator=g)
        xb, yb = _d4(x_all[idx], y_all[idx], g)
        with amp:
            logits = seg(xb.to(device).contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits.float(), yb.to(device), ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            opt.step()
        sched.step()
        if val is not None and ((args.eval_every and step % args.eval_every == 0) or step == steps):
            v = evaluate_model(seg, val, scene.classes, norm.mean, norm.std, device)["miou"]
            history.append({"step": step, "loss": float(loss.detach()), "val_miou": v})
            if v > best[0]:
                best = (v, copy.deepcopy(seg.state_dict()), step)
    final_val = history[-1]["val_miou"] if history else None
    if val is not None and steps == 0:  # the probe: its validation mIoU, for lr/probe choices
        final_val = evaluate_model(seg, val, scene.classes, norm.mean, norm.std, device)["miou"]
    if best[1] is not None and args.select == "val":
        seg.load_state_dict(best[1])
    else:
        best = (best[0], best[1], steps)
    test = evaluate_model(seg, LabelledChips(scene, blocks["test"], bands), scene.classes, norm.mean, norm.std, device)
    split = {"axis": "x", "chip": args.chip, "test": args.test_fraction, "val": args.val_fraction, "gap": args.gap}
    result = {
        "init": args.init,
        "freeze_encoder": bool(args.freeze_encoder),
        "label_fraction": args.label_fraction,
        "label_unit": args.label_unit,
        "seed": args.seed,
        "train_chips": len(subset),
        "train_labelled_pixels": int((y_all != IGNORE_INDEX).sum()),
        "train_chips_total": len(blocks["train"]),
        "val_chips": len(val_chips),
        "val_chips_from": args.val_chips,
        "test_chips": len(blocks["test"]),
        "selected_step": best[2],
        "best_val_miou": best[0] if best[1] is not None else None,
        "final_val_miou": final_val,
        "steps": steps,
        "lp_ft": bool(args.lp_ft),
        "batchnorm": args.batchnorm,
        "lr": args.lr,
        "encoder_lr": args.lr if args.encoder_lr is None else args.encoder_lr,
        "wall_time_s": time.perf_counter() - t0,
        "history": history,
        "test": test,
        "split": split,
    }
    if not args.no_save:
        out = Path(args.output_dir or f"runs/finetune/{args.init.split(':')[0]}-{args.label_fraction:g}-{args.seed}")
        out.mkdir(parents=True, exist_ok=True)
        seg = seg.to(memory_format=torch.contiguous_format).cpu().eval()
        seg.config.metadata = {
            "training": {
                "recipe": "earth-embed training/finetune.py",
                "init": args.init,
                "freeze_encoder": bool(args.freeze_encoder),
                "data": str(args.data),
                "label_fraction": args.label_fraction,
                "label_unit": args.label_unit,
                "seed": args.seed,
                "steps": args.steps,
                "batchnorm": args.batchnorm,
                "train chips": f"{len(subset)} of {len(blocks['train'])} ({args.chip} px)",
                "test mIoU": f"{100 * test['miou']:.2f}",
                "model selection": (
                    f"step {result['selected_step']} of {args.steps}, best validation-block mIoU"
                    if args.select == "val"
                    else f"final step of {args.steps} (fixed schedule)"
                ),
            },
            "split": split,
            "metrics": {"test_miou": test["miou"], "test_per_class_iou": test["per_class_iou"]},
        }
        tmp = out / ".segmenter.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        seg.save_pretrained(tmp)
        if (out / "segmenter").exists():
            shutil.rmtree(out / "segmenter")
        tmp.rename(out / "segmenter")
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        result["output_dir"] = str(out)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = finetune(args)
    print(
        f"{args.init} fraction {args.label_fraction:g} seed {args.seed}: {result['train_chips']} train chips, "
        f"selected step {result['selected_step']}, {result['wall_time_s']:.0f} s"
    )
    print(format_metrics(result["test"]))
    return result


if __name__ == "__main__":
    main()
