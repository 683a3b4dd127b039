"""Few-shot land cover: fit a light head on frozen embeddings from a handful of labels, map a whole scene.

:func:`fit` reads labelled pixels (a vector file or a label raster), cross-validates the head over
spatial blocks, fits it on all labels, streams the class map (and optionally the probabilities), and
saves a logistic head as an :class:`~earth_embed.EarthSegmenter` folder that ``earth-embed classify``
and ``EarthSegmenter.from_pretrained`` run on other scenes. Everything is written into a temporary
folder beside ``out_dir`` and renamed into place at the end: a failure leaves nothing under ``out_dir``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from ..errors import EarthEmbedError, LabelError, RasterInputError
from ..outputs.atomic import output_folder
from ..outputs.classmap import class_map_style, landcover_png
from ..outputs.embeddings import EmbeddingRaster, is_embedding_tags, open_embeddings, split_layer
from .heads import HEADS, block_ids, blocked_cv, check_cv, cv_markdown, fit_head, make_head, predict_proba, to_segmenter
from .labels import Labels, read_labels
from .maps import map_writer, stream_pixels

#: Files written into ``out_dir``.
CLASS_MAP, LEGEND, PROBABILITIES, SEGMENTER, REPORT, EMBEDDINGS = (
    "classes.tif",
    "classes.png",
    "probabilities.tif",
    "segmenter",
    "cv_report.json",
    "embeddings.tif",
)


@dataclass
class FitResult:
    """What :func:`fit` wrote and measured."""

    out_dir: Path
    class_map: Path
    legend: Path
    report: dict[str, Any]
    embeddings: Path
    segmenter: Path | None = None
    probabilities: Path | None = None
    notes: list[str] = field(default_factory=list)


def is_embedding_raster(src: Any) -> bool:
    """True if ``src`` holds embeddings (``embed``'s GeoTIFF, a region COG by its tags, a region store)."""
    if isinstance(src, (list, tuple)):
        if len(src) != 1:
            return False
        src = src[0]
    if (split_layer(src)[0] / "zarr.json").is_file():  # a region store, one of its groups or GROUP@DATE layers
        return True
    if not Path(src).is_file():
        return False
    try:
        with rasterio.open(src) as ds:
            return is_embedding_tags(ds.tags())
    except rasterio.errors.RasterioIOError:
        return False


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.parent.is_dir():
        raise RasterInputError(
            f"The folder {out_dir.parent} does not exist; create it first (mkdir -p {out_dir.parent})."
        )
    if out_dir.exists() and not out_dir.is_dir():  # before --overwrite, which does not replace a file
        raise RasterInputError(f"{out_dir} is a file; give the name of a folder to write into.")
    if out_dir.exists() and not overwrite:
        raise RasterInputError(
            f"{out_dir} already exists; pass overwrite=True (CLI: --overwrite) or choose another name."
        )


def _load_encoder(model: str | None, emb: EmbeddingRaster, revision: str | None) -> tuple[Any, str]:
    from ..encoder import EarthEncoder

    name = model or emb.model
    if not name:
        raise EarthEmbedError(
            f"{emb.path} does not name the encoder that wrote it (no MODEL tag); pass --model (Python: model=) "
            "so that the head can be saved as a segmenter."
        )
    try:
        encoder = EarthEncoder.from_pretrained(name, revision=revision)
    except EarthEmbedError as err:
        raise EarthEmbedError(
            f"The encoder {name!r} that wrote {emb.path} cannot be loaded ({err}). Pass --model (Python: model=) "
            "with the encoder's folder or Hub id; the saved segmenter is that encoder plus the fitted head."
        ) from err
    if encoder.embed_dim != emb.dim:
        raise EarthEmbedError(
            f"The encoder {name!r} makes {encoder.embed_dim}-d embeddings but {emb.path} has {emb.dim} bands; "
            "pass --model with the encoder that wrote the embeddings."
        )
    return encoder, name


def label_features(emb: EmbeddingRaster, labels: Labels) -> tuple[np.ndarray, Labels]:
    """(n, D) embeddings of the labelled pixels, dropping pixels where the raster is nodata."""
    x = emb.read_pixels(labels.rows, labels.cols)
    valid = np.isfinite(x).all(axis=1)
    if not valid.any():
        raise LabelError(f"Every labelled pixel of {labels.source} is nodata in {emb.path}; label pixels with data.")
    kept = labels.subset(valid)
    if not valid.all():
        kept.notes.append(f"{int((~valid).sum())} labelled pixels are nodata in the embeddings and were ignored")
    return x[valid], kept


def _metadata(
    labels: Labels, counts: dict[str, int], report: dict[str, Any], head: str, sources: dict[str, str], encoder: Any
) -> dict[str, Any]:
    attribution = list(encoder.config.metadata.get("attribution") or [])
    return {
        "attribution": attribution + [f"Labels: {labels.source} (as given to `earth-embed fit`)."],
        "description": (
            f"A {head} head fitted by `earth-embed fit` on {sum(counts.values())} labelled pixels "
            f"({len(labels.classes)} classes) over frozen embeddings of the encoder below; the 1x1 classifier is the "
            "head with its feature standardisation folded into the weights."
        ),
        "training": {
            **sources,
            "head": head,
            "labelled pixels per class": ", ".join(f"{c} {n}" for c, n in counts.items()),
            "cross-validated overall accuracy": f"{100 * report['overall_accuracy']:.1f} %",
            "cross-validated mean IoU": f"{100 * report['mean_iou']:.1f} %",
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "results_markdown": cv_markdown(report, labels.classes, counts),
        "limitations": [
            "Fitted on few labels from one scene: check the map before trusting it elsewhere; the cross-validated "
            "scores are measured on these labels only.",
        ],
        "labels": {"classes": labels.classes, "counts": counts},
        "cross_validation": {k: v for k, v in report.items() if k != "confusion_matrix"},
    }


def fit(
    source: str | os.PathLike | list,
    labels: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | None = None,
    revision: str | None = None,
    column: str = "class",
    head: str = "logistic",
    folds: int = 5,
    block_size: int = 256,
    n_neighbors: int = 5,
    probabilities: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    device: str | None = None,
) -> FitResult:
    """Fit a head on labelled pixels of an embedding raster and map the whole raster with it.

    ``source``: an embedding GeoTIFF written by ``earth-embed embed``, or a scene (GeoTIFF, folder or
    list of band files) that is embedded first with ``model`` (default: the released encoder) into
    ``out_dir/embeddings.tif``. ``labels``: a vector file (points or polygons, any CRS, class names in
    ``column``) or a label raster on the embeddings' grid (0 = unlabelled). ``head``: ``logistic``
    (multinomial logistic regression on standardised features) or ``knn`` (cosine, ``n_neighbors``).
    The cross-validation holds out whole ``block_size`` px squares (``folds`` folds).

    Writes ``out_dir/``: ``classes.tif`` (uint8 class map, colour table, class names; 0 = nodata),
    ``classes.png`` (map and legend), ``cv_report.json``, ``probabilities.tif`` (if asked for: one
    float16 band per class) and, for the logistic head, ``segmenter/`` (an EarthSegmenter in Hub
    layout whose card lists the labels, their counts and the cross-validated scores).
    """
    if head not in HEADS:
        raise LabelError(f"Unknown head {head!r}; use one of {', '.join(HEADS)}.")
    if block_size < 1:
        raise LabelError(f"block_size={block_size} must be >= 1 px.")
    out = Path(out_dir).expanduser()
    _check_out_dir(out, overwrite)
    opts: dict[str, Any] = dict(
        model=model, revision=revision, column=column, head=head, folds=folds, block_size=block_size,
        n_neighbors=n_neighbors, probabilities=probabilities, seed=seed, progress=progress, device=device,
    )  # fmt: skip
    with output_folder(out) as tmp:  # one run per OUT; a killed run's .OUT.partial-... folder is removed
        opts["final"] = lambda p: str(out / Path(p).relative_to(tmp)) if Path(p).is_relative_to(tmp) else str(p)
        result = _fit_into(source, labels, tmp, opts)

    def moved(path: Path | None) -> Path | None:
        return out / path.relative_to(tmp) if path is not None and path.is_relative_to(tmp) else path

    return FitResult(
        out_dir=out,
        class_map=out / CLASS_MAP,
        legend=out / LEGEND,
        report=result.report,
        embeddings=moved(result.embeddings) or result.embeddings,
        segmenter=moved(result.segmenter),
        probabilities=moved(result.probabilities),
        notes=result.notes,
    )


def _embedded_source(source: Any, tmp: Path, opts: dict[str, Any]) -> Path:
    if is_embedding_raster(source):
        return Path(source[0] if isinstance(source, (list, tuple)) else source)
    from ..api import embed_raster
    from ..encoder import EarthEncoder
    from ..released import find_released

    name = opts["model"] or find_released("encoder")
    if name is None:
        raise EarthEmbedError(
            f"{source} is not an embedding raster (written by `earth-embed embed`), so it is taken as a scene to "
            "embed, but no --model is given and no released encoder is installed. Pass --model."
        )
    encoder = EarthEncoder.from_pretrained(name, revision=opts["revision"])
    src = source[0] if isinstance(source, (list, tuple)) and len(source) == 1 else source
    opts["model"] = name
    return embed_raster(
        encoder, src, tmp / EMBEDDINGS, model_id=name, revision=opts["revision"], progress=opts["progress"],
        device=opts["device"],
    )  # fmt: skip


def _fit_into(source: Any, labels_path: Any, tmp: Path, opts: dict[str, Any]) -> FitResult:
    emb_path = _embedded_source(source, tmp, opts)
    with open_embeddings(emb_path) as emb:
        encoder = None
        notes: list[str] = []
        if opts["head"] == "logistic":
            encoder, encoder_name = _load_encoder(opts["model"], emb, opts["revision"])
        else:
            notes.append("a kNN head is not a linear layer, so no segmenter folder is written (use the logistic head)")
        labels = read_labels(labels_path, emb, opts["column"])
        x, labels = label_features(emb, labels)
        notes += labels.notes
        counts = labels.counts()
        missing = [c for c, n in counts.items() if n == 0]
        if missing:
            raise LabelError(f"Class(es) {missing} have no labelled pixel with data in {emb.path}; label some pixels.")
        if len(labels.classes) < 2:
            raise LabelError(f"{labels.source} has one class only ({labels.classes[0]!r}); a map needs at least two.")
        if opts["head"] == "knn" and opts["n_neighbors"] >= len(labels.y):
            raise LabelError(
                f"--neighbors {opts['n_neighbors']} is not fewer than the {len(labels.y)} labelled pixels ({counts}), "
                "so every pixel's neighbours would be all the labels and the largest class would cover the whole "
                "map; pass a smaller --neighbors (Python: n_neighbors=) or label more pixels."
            )
        groups = block_ids(labels.rows, labels.cols, opts["block_size"], emb.width)
        folds = check_cv(labels.y, groups, labels.classes, opts["folds"], opts["block_size"])
        report = blocked_cv(
            x, labels.y, groups, labels.classes, opts["head"], folds, n_neighbors=opts["n_neighbors"], seed=opts["seed"]
        )
        res_m = abs(emb.transform.a)
        emb_name = opts["final"](emb.path)  # where the embeddings are once out_dir is in place
        report.update(
            block_px=opts["block_size"], block_m=opts["block_size"] * res_m, head=opts["head"], counts=counts,
            classes=labels.classes, labels=str(labels.source), embeddings=emb_name, notes=notes,
        )  # fmt: skip
        model = fit_head(make_head(opts["head"], opts["n_neighbors"], opts["seed"]), x, labels.y)
        k = len(labels.classes)
        style_tags, colormap = class_map_style(labels.classes, labels.colors)
        tags = {**style_tags, "HEAD": opts["head"], "LABELS": str(labels.source), "SOURCE_EMBEDDINGS": emb_name}
        outputs = [
            (
                map_writer(emb, tmp / CLASS_MAP, count=1, dtype="uint8", tags=tags, colormap=colormap),
                lambda v: predict_proba(model, v, k).argmax(1)[:, None] + 1,
            )
        ]
        if opts["probabilities"]:
            ptags = {"KIND": "class_probabilities", "CLASS_NAMES": json.dumps(labels.classes), "HEAD": opts["head"]}
            ptags["SOURCE_EMBEDDINGS"] = emb_name
            outputs.append(
                (
                    map_writer(
                        emb, tmp / PROBABILITIES, count=k, dtype="float16", tags=ptags, descriptions=labels.classes
                    ),
                    lambda v: predict_proba(model, v, k),
                )
            )
        stream_pixels(emb, outputs, progress=opts["progress"], desc="mapping")
        legend = Path(landcover_png(tmp / CLASS_MAP, tmp / LEGEND))
        seg_dir = None
        if encoder is not None:
            sources = {"encoder": encoder_name, "embeddings": emb_name, "labels": str(labels.source)}
            seg = to_segmenter(
                model, encoder, labels.classes, labels.colors, dn_offset=_dn_offset(emb),
                metadata=_metadata(labels, counts, report, opts["head"], sources, encoder),
            )  # fmt: skip
            seg_dir = tmp / SEGMENTER
            seg.save_pretrained(seg_dir)
        (tmp / REPORT).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return FitResult(
        out_dir=tmp,
        class_map=tmp / CLASS_MAP,
        legend=legend,
        report=report,
        embeddings=Path(emb_path),
        segmenter=seg_dir,
        probabilities=tmp / PROBABILITIES if opts["probabilities"] else None,
        notes=notes,
    )


def _dn_offset(emb: EmbeddingRaster) -> float | None:
    try:
        return float(emb.tags["DN_OFFSET"])
    except (KeyError, ValueError):
        return None
