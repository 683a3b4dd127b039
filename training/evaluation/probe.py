"""Linear probes on frozen per-pixel features, and probe-based model selection during pre-training.

The pre-text loss keeps falling long after the features stop getting better for land cover (issue 6's
reference run and our ablation 1), so checkpoints are chosen by a probe instead: a multinomial
logistic regression on frozen embeddings, fit on labelled pixels of a scene's *training* block and
scored on its *validation* block (:func:`training.data.labelled.region_split`). The test block is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from earth_embed import EarthEncoder
from training.data.checkpoints import save_pretrained_atomic
from training.data.labelled import IGNORE_INDEX, LabelledScene, region_split
from training.evaluation.evaluate import confusion_matrix, metrics_from_confusion
from training.evaluation.features import scene_features

__all__ = [
    "DATASETS",
    "FAST_MAX_TRAIN",
    "ProbeSelector",
    "block_masks",
    "cv_folds",
    "features",
    "fit_probe",
    "halves",
    "probe_scores",
    "probe_source",
    "random_twin",
    "scene_arrays",
    "training_block_width",
]


def scene_arrays(folder: Path, bands: list[str]) -> tuple[torch.Tensor, torch.Tensor, LabelledScene]:
    """Whole-scene reflectance (C, H, W) and labels (H, W) (0..K-1 or IGNORE_INDEX)."""
    scene = LabelledScene(folder)
    refl, y = scene.read(((0, scene.height), (0, scene.width)), bands)
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


def features(enc: EarthEncoder | None, refl: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(H*W, F) per-pixel features: the encoder's embeddings (stored BatchNorm), or the normalised bands when
    ``enc`` is None (:func:`training.evaluation.features.scene_features` has the other sources and AdaBN)."""
    return scene_features("raw" if enc is None else enc, refl, mean, std)


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


def probe_source(
    source: EarthEncoder | str,
    refl: torch.Tensor,
    y: torch.Tensor,
    fit: torch.Tensor,
    score: torch.Tensor,
    classes: list[str],
    mean: list[float],
    std: list[float],
    bn: str = "stored",
    adabn_region: torch.Tensor | None = None,
    max_train: int | None = None,
) -> dict[str, Any]:
    """Probe metrics of one feature source (:func:`training.evaluation.features.scene_features`) fit on ``fit``
    pixels and scored on ``score`` pixels of a scene."""
    feats = scene_features(source, refl, mean, std, bn=bn, adabn_region=adabn_region)
    return probe_scores(feats, y, fit, score, classes, max_train=max_train)


def training_block_width(scene: LabelledScene, chip: int = 64) -> int:
    """Columns ``[0, width)`` hold the training block of ``region_split`` (west of the validation block)."""
    return max(c.col + c.size for c in region_split(scene, chip=chip)["train"])


def cv_folds(
    scene: LabelledScene, k: int = 3, buffer: int = 32, chip: int = 64
) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Spatial k-fold cross-validation inside a scene's *training* block (``region_split``): never the
    validation or test block.

    Returns ``(width, folds)``: the training block spans columns ``[0, width)``; each fold is a pair of
    (H, width) bool masks (fit, score). The block is cut into ``k`` vertical strips; a fold scores one
    strip and fits on the others minus ``buffer`` px on each side of the scored strip.
    """
    width = training_block_width(scene, chip)
    edges = [round(i * width / k) for i in range(k + 1)]
    cols = torch.arange(width)
    folds = []
    for a, b in zip(edges[:-1], edges[1:]):
        score = ((cols >= a) & (cols < b)).expand(scene.height, width)
        fit = ((cols < a - buffer) | (cols >= b + buffer)).expand(scene.height, width)
        folds.append((fit.clone(), score.clone()))
    return width, folds


#: The labelled sets of the frozen-probe benchmark (folders under ``<data-root>/labelled``).
DATASETS = ("brandenburg-osm", "slovenia-eolearn", "austria-ben-v2")
#: Probe training pixels of the quick (``--fast``) tables.
FAST_MAX_TRAIN = 20000


def halves(scene: LabelledScene, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (H, W) masks of the probe's train and test pixels."""
    if name == "brandenburg-osm":  # the label-efficiency split: train block (west) vs test block (east)
        train, test = block_masks(scene, ("train", "test"))
        return train, test
    train = torch.zeros(scene.height, scene.width, dtype=torch.bool)
    test = torch.zeros_like(train)
    mid = scene.width // 2
    train[:, :mid] = True
    test[:, mid:] = True
    return train, test


def random_twin(enc: EarthEncoder, seed: int) -> EarthEncoder:
    """The same architecture, bands and normalisation as ``enc`` with fresh weights drawn with ``seed``."""
    torch.manual_seed(seed)
    return EarthEncoder(enc.config).eval()


REFERENCES = ("raw", "stack")  # hand-made feature rows every probe table carries


class ProbeSelector:
    """Scores encoders by linear probes on a labelled scene and keeps the best one on disk.

    ``method="val"``: fit on the training block, score on the validation block. ``method="cv"``: the
    mean mIoU of a 3-fold spatial cross-validation inside the training block (:func:`cv_folds`; only
    the training block's pixels are read). ``selector(encoder, step, key=ema_encoder)`` probes the
    query encoder (and the EMA key encoder when given) with stored BatchNorm statistics and with AdaBN
    (re-estimated on the same pixels, no labels), and returns a flat dict for ``probe.csv``:
    ``probe_<query|key>_<stored|adabn>`` mIoUs, the hand-made references ``probe_raw`` and
    ``probe_stack`` (constant, computed once), and ``probe_val_miou``, the selection score: the best
    stored-BN mIoU (what ``earth-embed embed`` gives users) over the candidates, ``selected_is_key``
    saying which (1.0 = the EMA key encoder).
    When that score is the best so far the candidate is saved to ``best_dir`` (atomically).
    """

    def __init__(
        self,
        folder: str | Path,
        bands: list[str],
        best_dir: str | Path | None,
        max_train: int = 20000,
        method: str = "val",
        bn_modes: tuple[str, ...] = ("stored", "adabn"),
    ) -> None:
        if method not in ("val", "cv"):
            raise ValueError(f"probe selection method must be 'val' or 'cv', got {method!r}")
        self.folder = Path(folder)
        self.method, self.bn_modes = method, tuple(bn_modes)
        refl, y, self.scene = scene_arrays(self.folder, list(bands))
        if method == "cv":
            width, self.splits = cv_folds(self.scene)
            self.refl, self.y = refl[:, :, :width].contiguous(), y[:, :width].contiguous()
            self.adabn_region: torch.Tensor | None = None  # the training block is all that is kept
        else:
            self.refl, self.y = refl, y
            train, val = block_masks(self.scene, ("train", "val"))
            self.splits = [(train, val)]
            self.adabn_region = torch.zeros(self.scene.height, self.scene.width, dtype=torch.bool)
            self.adabn_region[:, : training_block_width(self.scene)] = True  # AdaBN windows: training block only
        self.best_dir = Path(best_dir) if best_dir is not None else None  # None: score only, save nothing
        self.max_train = int(max_train)
        self.best: dict[str, Any] | None = None
        self.references: dict[str, float] | None = None

    def score(self, source: EarthEncoder | str, mean: list[float], std: list[float], bn: str = "stored") -> float:
        """Selection mIoU of one feature source (an encoder with ``bn`` stored/adabn, or a hand-made name)."""
        feats = scene_features(source, self.refl, mean, std, bn=bn, adabn_region=self.adabn_region)
        scores = [
            probe_scores(feats, self.y, fit, score, self.scene.classes, max_train=self.max_train)["miou"]
            for fit, score in self.splits
        ]
        return float(np.mean(scores))

    def __call__(self, encoder: EarthEncoder, step: int, key: EarthEncoder | None = None) -> dict[str, Any]:
        norm = encoder.config.normalization
        candidates = {"query": encoder} | ({"key": key} if key is not None else {})
        result: dict[str, Any] = {"step": int(step)}
        with torch.random.fork_rng(devices=[]):  # probing must not shift the training run's random stream
            if self.references is None:
                self.references = {f"probe_{r}": self.score(r, norm.mean, norm.std) for r in REFERENCES}
            for name, enc in candidates.items():
                was_training = enc.training
                for bn in self.bn_modes:
                    result[f"probe_{name}_{bn}"] = self.score(enc.eval(), norm.mean, norm.std, bn)
                enc.train(was_training)
        result.update(self.references)
        selected = max(candidates, key=lambda n: result[f"probe_{n}_stored"])
        result["probe_val_miou"] = result[f"probe_{selected}_stored"]
        result["selected_is_key"] = float(selected == "key")  # numeric, so probe.csv stays a table of floats
        if self.best is None or result["probe_val_miou"] > self.best["probe_val_miou"]:
            self.best = dict(result)
            if self.best_dir is not None:
                save_pretrained_atomic(candidates[selected], self.best_dir)
        return result
