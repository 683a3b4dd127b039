"""Linear probes on frozen per-pixel features, and probe-based model selection during pre-training.

The pre-text loss keeps falling long after the features stop getting better for land cover (issue 6's
reference run and our ablation 1), so checkpoints are chosen by a probe instead: a multinomial
logistic regression on frozen embeddings, fit on labelled pixels of a scene's *training* block and
scored on its *validation* block (:func:`training.data.region_split`). The test block is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from earth_embed import EarthEncoder
from training.data import IGNORE_INDEX, LabelledScene, region_split
from training.evaluate import confusion_matrix, metrics_from_confusion
from training.model import save_pretrained_atomic

__all__ = ["ProbeSelector", "block_masks", "features", "fit_probe", "probe_scores", "scene_arrays"]


def scene_arrays(folder: Path, bands: list[str]) -> tuple[torch.Tensor, torch.Tensor, LabelledScene]:
    """Whole-scene reflectance (C, H, W) and labels (H, W) (0..K-1 or IGNORE_INDEX)."""
    scene = LabelledScene(folder)
    refl, y = scene.read(Window(0, 0, scene.width, scene.height), bands)
    return torch.from_numpy(refl), torch.from_numpy(y), scene


def block_masks(scene: LabelledScene, blocks: tuple[str, ...], chip: int = 64) -> list[torch.Tensor]:
    """Boolean (H, W) masks of the chips of the named ``region_split`` blocks (train / val / test)."""
    split = region_split(scene, chip=chip)
    masks = []
    for name in blocks:
        mask = torch.zeros(scene.height, scene.width, dtype=torch.bool)
        for c in split[name]:
            mask[c.row : c.row + c.size, c.col : c.col + c.size] = True
        masks.append(mask)
    return masks


@torch.no_grad()
def features(enc: EarthEncoder | None, refl: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(H*W, F) per-pixel features: the encoder's embeddings, or the normalised bands when ``enc`` is None."""
    x = (refl - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    out = x if enc is None else enc(x[None])[0]
    return out.flatten(1).T.contiguous()


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 300, seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression (full batch, L-BFGS) on standardised features."""
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=0.5, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y) + 1e-4 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def probe_scores(
    feats: torch.Tensor,
    y: torch.Tensor,
    train: torch.Tensor,
    test: torch.Tensor,
    classes: list[str],
    max_train: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit on labelled ``train`` pixels (at most ``max_train``, drawn with ``seed``), score on labelled ``test`` pixels.

    mIoU is over the classes present in the scored pixels' truth.
    """
    yf = y.flatten()
    tr = torch.nonzero(train.flatten() & (yf != IGNORE_INDEX))[:, 0]
    te = test.flatten() & (yf != IGNORE_INDEX)
    if max_train is not None and len(tr) > max_train:
        g = torch.Generator().manual_seed(seed)
        tr = tr[torch.randperm(len(tr), generator=g)[:max_train]]
    mu, sd = feats[tr].mean(0), feats[tr].std(0).clamp(min=1e-6)
    z = (feats - mu) / sd
    probe = fit_probe(z[tr], yf[tr], len(classes), seed=seed)
    with torch.no_grad():
        pred = probe(z[te]).argmax(1)
    m = metrics_from_confusion(confusion_matrix(pred, yf[te], len(classes)), classes)
    present = [c for i, c in enumerate(classes) if int((yf[te] == i).sum()) > 0]
    m["miou"] = float(np.mean([m["per_class_iou"][c] for c in present]))
    m["classes_scored"] = present
    m["n_train_pixels"], m["n_test_pixels"] = len(tr), int(te.sum())
    return m


class ProbeSelector:
    """Scores encoders by a linear probe (train block -> validation block) and keeps the best one on disk.

    ``selector(encoder, step)`` returns the probe's metrics and, when the validation mIoU is the best so
    far, saves the encoder to ``best_dir`` (atomically). The scene is read once.
    """

    def __init__(self, folder: str | Path, bands: list[str], best_dir: str | Path, max_train: int = 20000) -> None:
        self.folder = Path(folder)
        self.refl, self.y, self.scene = scene_arrays(self.folder, list(bands))
        self.train, self.val = block_masks(self.scene, ("train", "val"))
        self.best_dir = Path(best_dir)
        self.max_train = int(max_train)
        self.best: dict[str, Any] | None = None

    def __call__(self, encoder: EarthEncoder, step: int) -> dict[str, Any]:
        was_training = encoder.training
        encoder.eval()
        norm = encoder.config.normalization
        with torch.random.fork_rng(devices=[]):  # probing must not shift the training run's random stream
            feats = features(encoder, self.refl, norm.mean, norm.std)
            m = probe_scores(feats, self.y, self.train, self.val, self.scene.classes, max_train=self.max_train)
        encoder.train(was_training)
        result = {"step": int(step), "probe_val_miou": m["miou"], "probe_val_accuracy": m["pixel_accuracy"]}
        if self.best is None or result["probe_val_miou"] > self.best["probe_val_miou"]:
            self.best = result
            save_pretrained_atomic(encoder, self.best_dir)
        return result
