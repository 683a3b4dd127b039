"""The fitted change score: a logistic head on labelled change / no-change pixels of both dates,
cross-validated over spatial blocks as ``fit`` does (``earth-embed change --labels``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LabelError
from ..outputs.embeddings import EmbeddingRaster
from .change_mask import MASK_CLASSES
from .change_scores import fit_change_head, pair_features, valid_rows
from .heads import block_ids, blocked_cv, check_cv
from .labels import Labels, read_labels

#: Label class names read as "change" (lower case) when ``change_class`` is not given.
CHANGE_NAMES = {"change", "changed", "yes", "true", "1", "new"}


def binary_labels(labels: Labels, change_class: str | None) -> tuple[np.ndarray, str]:
    """y (1 = change, 0 = no change) of two-class labels, and the change class's name."""
    if len(labels.classes) != 2:
        raise LabelError(
            f"{labels.source} has {len(labels.classes)} classes ({labels.classes}); change labels need exactly two: "
            "change and no change."
        )
    if change_class is None:
        found = [c for c in labels.classes if c.strip().lower() in CHANGE_NAMES]
        if len(found) != 1:
            raise LabelError(
                f"Cannot tell which class of {labels.source} ({labels.classes}) is change; name it with "
                "--change-class (Python: change_class=)."
            )
        change_class = found[0]
    if change_class not in labels.classes:
        raise LabelError(f"change_class={change_class!r} is not a class of {labels.source} ({labels.classes}).")
    return (np.asarray(labels.y) == labels.classes.index(change_class)).astype(np.int64), change_class


def fit_head(ea: EmbeddingRaster, eb: EmbeddingRaster, opts: dict[str, Any], notes: list[str]) -> tuple[Any, dict]:
    """Read the labelled pixels of both dates, cross-validate and fit the change head."""
    labels = read_labels(opts["labels"], ea, opts["column"])
    y, name = binary_labels(labels, opts["change_class"])
    xa, xb = ea.read_pixels(labels.rows, labels.cols), eb.read_pixels(labels.rows, labels.cols)
    ok = valid_rows(xa, xb)
    if not ok.all():
        notes.append(f"{int((~ok).sum())} labelled pixels are nodata in one of the dates and were ignored")
    xa, xb, y, rows, cols = xa[ok], xb[ok], y[ok], labels.rows[ok], labels.cols[ok]
    classes = MASK_CLASSES
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    if min(counts.values()) == 0:
        raise LabelError(f"{labels.source} needs labelled pixels with data in both dates for both classes ({counts}).")
    groups = block_ids(rows, cols, opts["block_size"], ea.width)
    folds = check_cv(y, groups, classes, opts["folds"], opts["block_size"])
    report = blocked_cv(pair_features(xa, xb), y, groups, classes, "logistic", folds, seed=opts["seed"])
    report.update(labels=str(labels.source), change_class=name, counts=counts, block_px=opts["block_size"])
    return fit_change_head(xa, xb, y, seed=opts["seed"]), report
