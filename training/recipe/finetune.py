"""Land-cover fine-tuning of an EarthEncoder into an EarthSegmenter (or a frozen-encoder linear probe).

    from training.recipe.finetune import FinetuneConfig, finetune
    result = finetune(FinetuneConfig(data="../shared/data/labelled/brandenburg-osm", init="pretrained:runs/cpu/encoder",
                                     label_fraction=0.05, lp_ft=True, batchnorm="frozen"))

``python training/finetune.py`` builds the :class:`FinetuneConfig` from its flags and calls :func:`finetune`.
The labelled folder is cut into train | val | test blocks along x (``region_split``); the
``label_fraction`` subset of training chips (or, with ``label_unit="pixels"``, of the labelled pixels of every
training chip) is drawn with ``seed``. Model selection uses the
validation block's mIoU (never the test block, never the loss). Writes ``<output_dir>/segmenter/``
(``from_pretrained``-loadable) and ``<output_dir>/metrics.json`` (test mIoU, per-class IoU,
confusion matrix).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

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
from training.evaluation.evaluate import evaluate_model, normalised
from training.evaluation.features import reestimate_batchnorm
from training.evaluation.probe import fit_probe

#: What ``val_chips`` scores: the validation block, or the training chips a label fraction leaves out.
VAL_CHIPS = ("val-block", "unused-train")
#: What ``label_fraction`` is a share of: whole training chips, or the labelled pixels of every training chip.
LABEL_UNITS = ("chips", "pixels")
#: How fine-tuning treats BatchNorm statistics (``batchnorm``).
BATCHNORM_MODES = ("train", "frozen")
#: Which step's weights are kept: the best validation mIoU, or the final step (fixed schedule).
SELECT_MODES = ("val", "last")


@dataclass
class FinetuneConfig:
    """One fine-tuning run (the flags of ``training/finetune.py``, with the same defaults).

    ``data``: labelled folder (``B*.tif`` + ``labels.tif`` + ``classes.json``). ``init``:
    ``"pretrained:PATH"`` (an encoder or segmenter folder) or ``"random"`` (``arch``, ``embed_dim``,
    ``bands``; or the architecture, bands and normalisation of the encoder in ``norm_from``, weights
    random). ``freeze_encoder``: the linear probe only (the 1x1 classifier fit as the standardised L-BFGS
    probe); ``lp_ft``: that probe first, then the whole net (encoder at ``encoder_lr``, default ``lr``).
    ``batchnorm="frozen"``: BatchNorm statistics re-estimated once on the training block's images (no
    labels) before the probe head is fit, then held while the weights train. ``val_chips``: what the
    validation mIoU scores; ``select``: ``"val"`` keeps the best validation step, ``"last"`` the final
    one; ``eval_every`` 0 scores the final step only. ``gap`` between blocks defaults to one chip;
    ``dn_offset`` -1000 for processing baseline >= 04.00; ``threads`` 0 = all cores. ``output_dir``
    defaults to ``runs/finetune/<init>-<fraction>-<seed>``; ``save=False`` writes nothing (experiments).
    """

    data: str | Path
    init: str
    freeze_encoder: bool = False
    lp_ft: bool = False
    batchnorm: str = "train"
    label_fraction: float = 1.0
    label_unit: str = "chips"
    seed: int = 0
    arch: str = "unet-resnet18"
    embed_dim: int = 64
    bands: list[str] = field(default_factory=lambda: list(RELEASE_BANDS))
    norm_from: str | Path | None = None
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    encoder_lr: float | None = None
    probe_pixels: int = 20000
    weight_decay: float = 1e-4
    chip: int = 64
    test_fraction: float = 0.3
    val_fraction: float = 0.15
    gap: int | None = None
    val_chips: str = "val-block"
    eval_every: int = 50
    select: str = "val"
    dn_offset: float = 0.0
    threads: int = 0
    output_dir: str | Path | None = None
    save: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (
            ("batchnorm", BATCHNORM_MODES),
            ("label_unit", LABEL_UNITS),
            ("val_chips", VAL_CHIPS),
            ("select", SELECT_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"FinetuneConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")


class _FinetuneRecord(TypedDict):
    init: str
    freeze_encoder: bool
    label_fraction: float
    label_unit: str
    seed: int
    train_chips: int
    train_labelled_pixels: int
    train_chips_total: int
    val_chips: int
    val_chips_from: str
    test_chips: int
    selected_step: int
    best_val_miou: float | None
    final_val_miou: float | None
    steps: int
    lp_ft: bool
    batchnorm: str
    lr: float
    encoder_lr: float
    wall_time_s: float
    history: list[dict[str, Any]]
    test: dict[str, Any]
    split: dict[str, Any]


class FinetuneResult(_FinetuneRecord, total=False):
    """What :func:`finetune` returns and writes to ``metrics.json``; ``output_dir`` when the segmenter was saved."""

    output_dir: str


def build_encoder(cfg: FinetuneConfig, train_chips: LabelledChips | None) -> EarthEncoder:
    """The starting encoder for ``cfg.init``."""
    if cfg.init.startswith("pretrained:"):
        return EarthEncoder.from_pretrained(cfg.init.split(":", 1)[1]).train()
    if cfg.init != "random":
        raise ConfigError(f"--init must be 'pretrained:PATH' or 'random', got {cfg.init!r}")
    torch.manual_seed(cfg.seed)
    if cfg.norm_from:
        ref = EarthEncoder.from_pretrained(cfg.norm_from).config
        n = ref.normalization
        return EarthEncoder.new(ref.architecture, bands=ref.bands, embed_dim=ref.embed_dim, mean=n.mean, std=n.std)
    if train_chips is None:
        raise ConfigError("--init random with the probe start needs training chips")
    x, _ = train_chips.stacked()
    valid = (x != 0).any(1, keepdim=True).expand_as(x)
    xs = x.transpose(0, 1)[valid.transpose(0, 1)].reshape(x.shape[1], -1)
    return EarthEncoder.new(
        cfg.arch,
        bands=cfg.bands,
        embed_dim=cfg.embed_dim,
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


def finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune (or probe), select on validation mIoU, evaluate on the test block; returns the metrics."""
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scene = LabelledScene(cfg.data, dn_offset=cfg.dn_offset)
    blocks = region_split(scene, chip=cfg.chip, test=cfg.test_fraction, val=cfg.val_fraction, gap=cfg.gap)
    by_chip = cfg.label_unit == "chips"
    subset = label_fraction_subset(blocks["train"], cfg.label_fraction if by_chip else 1.0, cfg.seed)
    bands = cfg.bands
    if cfg.init.startswith("pretrained:"):
        bands = EarthEncoder.from_pretrained(cfg.init.split(":", 1)[1]).bands
    elif cfg.norm_from:
        bands = EarthEncoder.from_pretrained(cfg.norm_from).bands
    train = LabelledChips(scene, subset, bands)
    encoder = build_encoder(cfg, train)
    torch.manual_seed(cfg.seed)
    seg = EarthSegmenter.from_encoder(encoder, scene.classes, scene.colors).to(device)
    seg = seg.to(memory_format=torch.channels_last)
    norm = seg.config.normalization
    x_all, y_all = train.stacked()
    if not by_chip:
        y_all = sparse_labels(y_all, cfg.label_fraction, cfg.seed)
    x_all = normalised(x_all, norm.mean, norm.std)
    val_chips = blocks["val"] if cfg.val_chips == "val-block" else [c for c in blocks["train"] if c not in subset]
    if cfg.val_chips == "unused-train" and not val_chips:
        raise ConfigError(
            f"--val-chips unused-train: label fraction {cfg.label_fraction} of {cfg.label_unit} uses every training "
            "chip; pass a smaller --label-fraction with --label-unit chips, or --val-chips val-block"
        )
    val = LabelledChips(scene, val_chips, bands) if val_chips else None
    g = torch.Generator().manual_seed(cfg.seed)  # batch order and flips: the same for every start of a seed
    steps = 0 if cfg.freeze_encoder else cfg.steps
    if cfg.batchnorm == "frozen":  # the training block's images, labelled or not: no label is read
        block = normalised(LabelledChips(scene, blocks["train"], bands).stacked()[0], norm.mean, norm.std)
        seg.encoder = batchnorm_on_images(seg.encoder, block).train()
    if cfg.freeze_encoder or cfg.lp_ft:
        fit_linear_head(seg, x_all.to(device), y_all, cfg.probe_pixels, cfg.seed)
    if cfg.freeze_encoder:
        seg.encoder.requires_grad_(False)
    head = list(seg.classifier.parameters())
    params: list[dict[str, Any]] = [
        {"params": list(seg.encoder.parameters()), "lr": cfg.lr if cfg.encoder_lr is None else cfg.encoder_lr},
        {"params": head, "lr": cfg.lr},
    ]
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[p["lr"] for p in params], total_steps=max(steps, 1), pct_start=0.1
    )
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    best: tuple[float, dict[str, Any] | None, int] = (-1.0, None, 0)
    history = []
    for step in range(1, steps + 1):
        seg.train()
        if cfg.batchnorm == "frozen":
            hold_batchnorm(seg)
        idx = torch.randint(0, x_all.shape[0], (cfg.batch_size,), generator=g)
        xb, yb = _d4(x_all[idx], y_all[idx], g)
        with amp:
            logits = seg(xb.to(device).contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits.float(), yb.to(device), ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            opt.step()
        sched.step()
        if val is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == steps):
            v = evaluate_model(seg, val, scene.classes, norm.mean, norm.std, device)["miou"]
            history.append({"step": step, "loss": float(loss.detach()), "val_miou": v})
            if v > best[0]:
                best = (v, copy.deepcopy(seg.state_dict()), step)
    final_val = history[-1]["val_miou"] if history else None
    if val is not None and steps == 0:  # the probe: its validation mIoU, for lr/probe choices
        final_val = evaluate_model(seg, val, scene.classes, norm.mean, norm.std, device)["miou"]
    if best[1] is not None and cfg.select == "val":
        seg.load_state_dict(best[1])
    else:
        best = (best[0], best[1], steps)
    test = evaluate_model(seg, LabelledChips(scene, blocks["test"], bands), scene.classes, norm.mean, norm.std, device)
    split = {"axis": "x", "chip": cfg.chip, "test": cfg.test_fraction, "val": cfg.val_fraction, "gap": cfg.gap}
    result: FinetuneResult = {
        "init": cfg.init,
        "freeze_encoder": bool(cfg.freeze_encoder),
        "label_fraction": cfg.label_fraction,
        "label_unit": cfg.label_unit,
        "seed": cfg.seed,
        "train_chips": len(subset),
        "train_labelled_pixels": int((y_all != IGNORE_INDEX).sum()),
        "train_chips_total": len(blocks["train"]),
        "val_chips": len(val_chips),
        "val_chips_from": cfg.val_chips,
        "test_chips": len(blocks["test"]),
        "selected_step": best[2],
        "best_val_miou": best[0] if best[1] is not None else None,
        "final_val_miou": final_val,
        "steps": steps,
        "lp_ft": bool(cfg.lp_ft),
        "batchnorm": cfg.batchnorm,
        "lr": cfg.lr,
        "encoder_lr": cfg.lr if cfg.encoder_lr is None else cfg.encoder_lr,
        "wall_time_s": time.perf_counter() - t0,
        "history": history,
        "test": test,
        "split": split,
    }
    if cfg.save:
        out = Path(cfg.output_dir or f"runs/finetune/{cfg.init.split(':')[0]}-{cfg.label_fraction:g}-{cfg.seed}")
        out.mkdir(parents=True, exist_ok=True)
        seg = seg.to(memory_format=torch.contiguous_format).cpu().eval()
        seg.config.metadata = {
            "training": {
                "recipe": "earth-embed training/finetune.py",
                "init": cfg.init,
                "freeze_encoder": bool(cfg.freeze_encoder),
                "data": str(cfg.data),
                "label_fraction": cfg.label_fraction,
                "label_unit": cfg.label_unit,
                "seed": cfg.seed,
                "steps": cfg.steps,
                "batchnorm": cfg.batchnorm,
                "train chips": f"{len(subset)} of {len(blocks['train'])} ({cfg.chip} px)",
                "test mIoU": f"{100 * test['miou']:.2f}",
                "model selection": (
                    f"step {result['selected_step']} of {cfg.steps}, best validation-block mIoU"
                    if cfg.select == "val"
                    else f"final step of {cfg.steps} (fixed schedule)"
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
