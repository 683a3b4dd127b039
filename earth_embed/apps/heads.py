"""Light heads on frozen embeddings (scikit-learn), their spatially blocked cross-validation, and the
conversion of a linear head into an :class:`~earth_embed.EarthSegmenter`.

``logistic``: multinomial logistic regression on standardised features (``StandardScaler`` then
``LogisticRegression``). ``knn``: k nearest neighbours by cosine distance. Cross-validation folds are
whole square blocks of the raster (``StratifiedGroupKFold`` with the block as group), never random
pixels: neighbouring pixels are near-copies of each other, and a random split scores memory, not maps.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ..errors import LabelError
from .deps import require

HEADS = ("logistic", "knn")


def make_head(kind: str = "logistic", n_neighbors: int = 5, seed: int = 0) -> Any:
    """An unfitted scikit-learn classifier: ``logistic`` (standardised features) or ``knn`` (cosine)."""
    require("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    if kind == "knn":
        return KNeighborsClassifier(n_neighbors=n_neighbors, metric="cosine", algorithm="brute")
    raise LabelError(f"Unknown head {kind!r}; use one of {', '.join(HEADS)}.")


def fit_head(head: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """Fit ``head`` on (n, D) features; kNN uses at most as many neighbours as there are samples.

    BLAS runs on one thread: the problems are small, and a multi-threaded BLAS on a busy machine spends
    its time waiting (measured: 100x slower with other jobs running).
    """
    from threadpoolctl import threadpool_limits

    if hasattr(head, "n_neighbors"):
        head.set_params(n_neighbors=min(head.n_neighbors, len(y)))
    with threadpool_limits(limits=1, user_api="blas"):
        return head.fit(x, y)


def predict_proba(head: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, K) class probabilities over all K classes (classes unseen by the head get 0)."""
    from threadpoolctl import threadpool_limits

    out = np.zeros((len(x), n_classes), np.float32)
    if len(x):
        with threadpool_limits(limits=1, user_api="blas"):
            out[:, head.classes_] = head.predict_proba(x)
    return out


def block_ids(rows: np.ndarray, cols: np.ndarray, block: int, width: int) -> np.ndarray:
    """The index of the ``block`` x ``block`` px square that each pixel lies in."""
    n_cols = -(-width // block)
    return (rows // block) * n_cols + cols // block


def check_cv(y: np.ndarray, groups: np.ndarray, classes: list[str], folds: int, block: int) -> int:
    """Number of folds to use; clear errors when the labels cannot support a blocked cross-validation."""
    n_blocks = len(np.unique(groups))
    if folds < 2:
        raise LabelError(f"folds={folds}: cross-validation needs at least 2 folds (--folds 2).")
    if n_blocks < 2:
        raise LabelError(
            f"All labels lie in one {block} x {block} px block, so a spatially blocked cross-validation cannot "
            "test the head anywhere it was not trained. Label pixels spread over the scene (at least two blocks), "
            "or pass a smaller --block-size."
        )
    used = min(folds, n_blocks)
    counts = np.bincount(y, minlength=len(classes))
    short = [f"{classes[i]!r} ({int(counts[i])})" for i in range(len(classes)) if counts[i] < used]
    if short:
        raise LabelError(
            f"Class(es) {', '.join(short)} have fewer labelled pixels than the {used} cross-validation folds need "
            f"(at least {used} per class). Add labels of these classes, or pass fewer --folds (at least 2)."
        )
    return used


def blocked_cv(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    kind: str,
    folds: int,
    *,
    n_neighbors: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Out-of-fold predictions over spatial blocks -> overall accuracy, per-class IoU, confusion matrix."""
    require("sklearn")
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import StratifiedGroupKFold

    k = len(classes)
    pred = np.full(len(y), -1, np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # "least populated class has only n members": checked by check_cv
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(x, y, groups))
    for train, test in splits:
        seen = np.unique(y[train])
        if len(seen) == 1:  # the held-out blocks took every other class: the head can only say this one
            pred[test] = seen[0]
            continue
        head = fit_head(make_head(kind, n_neighbors, seed), x[train], y[train])
        pred[test] = predict_proba(head, x[test], k).argmax(1)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = {c: float(tp[i] / union[i]) if union[i] else float("nan") for i, c in enumerate(classes)}
    blocks_per_class = {c: len(np.unique(groups[y == i])) for i, c in enumerate(classes)}
    return {
        "folds": len(splits),
        "overall_accuracy": float(tp.sum() / max(1, cm.sum())),
        "mean_iou": float(np.nanmean(list(iou.values()))),
        "per_class_iou": iou,
        "confusion_matrix": cm.tolist(),
        "blocks": int(len(np.unique(groups))),
        "blocks_per_class": blocks_per_class,
        "warnings": [
            f"class {c!r} lies in one block only: its cross-validated score cannot be trusted; label it elsewhere too"
            for c, n in blocks_per_class.items()
            if n < 2
        ],
    }


def cv_markdown(report: dict[str, Any], classes: list[str], counts: dict[str, int]) -> str:
    """The cross-validation report as Markdown: scores per class and the confusion matrix."""
    lines = [
        f"Spatially blocked {report['folds']}-fold cross-validation ({report['block_px']} x {report['block_px']} px "
        f"blocks, {report['blocks']} blocks hold labels): overall accuracy **{100 * report['overall_accuracy']:.1f} %**, "
        f"mean IoU **{100 * report['mean_iou']:.1f} %**.",
        "",
        "| class | labelled px | blocks | IoU (%) |",
        "|---|---|---|---|",
    ]
    for c in classes:
        lines.append(
            f"| {c} | {counts[c]} | {report['blocks_per_class'][c]} | {100 * report['per_class_iou'][c]:.1f} |"
        )
    lines += ["", "Confusion matrix (rows: label, columns: prediction):", ""]
    lines.append("| | " + " | ".join(classes) + " |")
    lines.append("|---" * (len(classes) + 1) + "|")
    for c, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def linear_weights(head: Any) -> tuple[np.ndarray, np.ndarray]:
    """(K, D) weights and (K,) bias of a fitted logistic head on *raw* embeddings (standardisation folded in).

    ``logits = W ((e - mu) / sd) + b = (W / sd) e + (b - (W / sd) mu)``. A binary logistic regression
    (one score) becomes two logits, ``[0, s]``, with the same arg-max and softmax.
    """
    scaler, lr = head[0], head[-1]
    w = lr.coef_ / scaler.scale_[None, :]
    b = lr.intercept_ - w @ scaler.mean_
    if w.shape[0] == 1:  # binary: sklearn keeps the score of the second class only
        w = np.concatenate([np.zeros_like(w), w])
        b = np.concatenate([np.zeros_like(b), b])
    return w.astype(np.float32), b.astype(np.float32)


def to_segmenter(
    head: Any,
    encoder: Any,
    classes: list[str],
    colors: list[tuple[int, int, int]],
    *,
    dn_offset: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """An :class:`~earth_embed.EarthSegmenter`: ``encoder`` plus a 1x1 convolution equal to the logistic head.

    The head must have been fitted on all K classes (its ``classes_`` are 0..K-1).
    """
    from dataclasses import replace

    import torch

    from ..segmenter import EarthSegmenter

    if list(head.classes_) != list(range(len(classes))):
        raise LabelError("The head was not fitted on every class; every class needs labelled pixels.")
    w, b = linear_weights(head)
    seg = EarthSegmenter.from_encoder(encoder, classes=classes, colors=[list(c) for c in colors])
    norm = seg.config.normalization
    if dn_offset is not None:
        norm = replace(norm, dn_offset=float(dn_offset))
    seg.config = replace(seg.config, normalization=norm, metadata=dict(metadata or {}), name="")
    seg.encoder.config = replace(seg.encoder.config, normalization=norm)  # what normalize() reads
    with torch.no_grad():
        seg.classifier.weight.copy_(torch.from_numpy(w)[:, :, None, None])
        cast(torch.Tensor, seg.classifier.bias).copy_(torch.from_numpy(b))
    return seg.eval()
