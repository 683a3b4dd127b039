"""Change between two dates: a per-pixel change score from two embeddings of the same ground, a change mask,
optional polygons and a PNG, streamed window by window.

:func:`change` takes two embedding rasters written by one model on one grid (refused otherwise, see
``change_inputs``), or two scenes (both embedded with one model, the second onto the first's grid). Scores
(``change_scores``): ``cos`` and ``cva`` zero-shot, or ``fitted`` from labelled change / no-change pixels
(a logistic head on the pair, cross-validated over spatial blocks as ``fit`` does). Everything is written
into a temporary folder beside ``out_dir`` and renamed into place at the end: a failure leaves nothing.
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
from rasterio.windows import Window

from ..errors import EarthEmbedError, LabelError, OutputError
from ..outputs.atomic import output_folder
from ..outputs.classmap import class_map_style
from ..outputs.embeddings import EmbeddingRaster, open_embeddings
from ..outputs.geotiff import GeoTiffWriter
from .change_fit import fit_head
from .change_inputs import check_change_options, check_comparable, provenance
from .change_mask import (
    DEFAULT_FLOOR,
    DEFAULT_LEVEL,
    DEFAULT_MIN_AREA_M2,
    DEFAULT_RULE,
    DEFAULT_SMOOTH,
    MASK_CLASSES,
    MASK_COLORS,
    auto_threshold,
    describe_rule,
    drop_small,
    min_pixels,
)
from .change_scores import (
    DEFAULT_SCORE,
    DESCRIPTIONS,
    HALO,
    ScoreStats,
    change_probability,
    check_score,
    level_map,
    prepare,
    score_map,
    smooth_map,
    valid_rows,
)
from .change_sources import check_mask_buffer, embedded_pair
from .fit import _check_out_dir
from .polygons import FORMATS, pixel_area_m2, vectorise
from .render import change_png

#: Files written into ``out_dir``.
SCORE, MASK, PNG, REPORT, POLYGONS = "score.tif", "mask.tif", "change.png", "change_report.json", "changes"
#: Scores kept to choose the threshold (a uniform sample of the valid pixels).
OTSU_SAMPLE = 1_000_000
#: The fitted score's threshold: the head's own decision, P(change) above one half.
FITTED_THRESHOLD = 0.5


@dataclass
class ChangeResult:
    """What :func:`change` wrote and measured."""

    out_dir: Path
    score: Path
    mask: Path
    report: dict[str, Any]
    threshold: float
    changed_pixels: int
    valid_pixels: int
    png: Path | None = None
    polygons: Path | None = None
    embeddings: tuple[Path, Path] | None = None
    notes: list[str] = field(default_factory=list)


def change(
    a: str | os.PathLike,
    b: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    score: str | None = None,
    labels: str | os.PathLike | None = None,
    column: str = "class",
    change_class: str | None = None,
    threshold: float | None = None,
    smooth: int | None = None,
    polygons: str | None = None,
    min_area: float | None = None,
    min_level: float | None = None,
    model: str | None = None,
    revision: str | None = None,
    folds: int = 5,
    block_size: int = 256,
    seed: int = 0,
    png: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    device: str | None = None,
    mask_buffer: int | None = None,
) -> ChangeResult:
    """Map the change from date ``a`` to date ``b`` into the folder ``out_dir``.

    ``a``, ``b``: embedding rasters (GeoTIFF of ``earth-embed embed``, region COG, region store group) of one
    model on one grid, or scenes, embedded with ``model`` (default: the model named by the other input, else
    the released encoder) into ``out_dir/embeddings_{a,b}.tif``; ``b`` is resampled onto ``a``'s grid first.
    ``score``: a zero-shot score of ``change_scores.score_map`` (default without labels: ``DEFAULT_SCORE``) or
    ``fitted`` (default with ``labels``: a vector file or label raster on ``a``'s grid with two classes,
    ``change_class`` naming the change one; cross-validated over ``block_size`` px blocks in ``folds`` folds).
    ``smooth``: odd box-mean window (px) applied to the score map (0: none; default ``DEFAULT_SMOOTH``).
    ``threshold``: pixels scoring above it are change (default: the rule ``change_mask.DEFAULT_RULE``, or
    P(change) > 0.5 for ``fitted``). ``min_area``: changed patches smaller than this (m², default
    ``DEFAULT_MIN_AREA_M2``) are set to no change. ``min_level``: pixels whose change level
    (``change_scores.level_map``, a fixed scale, smoothed as the score is) is not above it are no change, however
    high their score (0: none; default ``change_mask.DEFAULT_LEVEL`` for the default score with the default
    rule, else none). ``polygons``: ``gpkg`` or ``geojson`` writes the change
    polygons (those of at least ``min_area``). ``mask_buffer``: px the cloud/shadow mask (``--mask auto``) of a
    scene embedded here grows by, as ``embed``'s ``mask_buffer`` (default ``change_sources.DEFAULT_MASK_BUFFER``;
    unused for inputs that are embeddings). Missing parent folders of ``out_dir`` are created.

    Writes ``score.tif`` (float32 COG, NaN where either date is nodata), ``mask.tif`` (uint8 COG: 1 no change,
    2 change, 0 nodata), ``change.png`` (score and mask with legend), ``change_report.json`` and, if asked,
    ``changes.gpkg``/``changes.geojson``.
    """
    score = score or ("fitted" if labels is not None else DEFAULT_SCORE)
    check_score(score)
    smooth = DEFAULT_SMOOTH if smooth is None else smooth
    min_area = DEFAULT_MIN_AREA_M2 if min_area is None else min_area
    if (score == "fitted") != (labels is not None):
        raise LabelError(
            "The fitted score needs labels (CLI: --labels FILE with change and no-change pixels); labels are only "
            f"used by the fitted score, not by {score!r}."
        )
    if polygons is not None and polygons not in FORMATS:
        raise EarthEmbedError(f"Unknown polygon format {polygons!r}; use one of {', '.join(FORMATS)}.")
    smooth_map(np.zeros((1, 1), np.float32), smooth)  # checks the window size before any work
    check_change_options(a, b, score, threshold, min_area, min_level)
    check_mask_buffer(mask_buffer)
    if min_level is None:
        min_level = DEFAULT_LEVEL if score == DEFAULT_SCORE and threshold is None else 0.0
    out = Path(out_dir).expanduser()
    made = [p for p in reversed(out.absolute().parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _check_out_dir(out, overwrite)
    except OSError as err:
        _remove_empty(made)
        raise OutputError(f"Cannot create the folder {out.parent} ({err}); give OUT under a writable folder.") from err
    except BaseException:
        _remove_empty(made)
        raise
    opts: dict[str, Any] = dict(
        score=score, labels=labels, column=column, change_class=change_class, threshold=threshold, smooth=smooth,
        polygons=polygons, min_area=min_area, min_level=float(min_level), model=model, revision=revision, folds=folds, block_size=block_size,
        seed=seed, png=png, progress=progress, device=device, mask_buffer=mask_buffer,
    )  # fmt: skip
    try:
        with output_folder(out) as tmp:  # one run per OUT; a killed run's .OUT.partial-... folder is removed
            result = _change_into(a, b, tmp, opts)
            report = json.dumps(_final(result.report, tmp, out), indent=1)
            (tmp / REPORT).write_text(report + "\n", encoding="utf-8")
    except BaseException:
        _remove_empty(made)
        raise

    def moved(p: Path | None) -> Path | None:
        return out / p.relative_to(tmp) if p is not None and p.is_relative_to(tmp) else p

    result.report = _final(result.report, tmp, out)
    emb = result.embeddings
    return ChangeResult(
        out_dir=out, score=out / SCORE, mask=out / MASK, report=result.report, threshold=result.threshold,
        changed_pixels=result.changed_pixels, valid_pixels=result.valid_pixels, png=moved(result.png),
        polygons=moved(result.polygons), embeddings=None if emb is None else (moved(emb[0]), moved(emb[1])),  # type: ignore[arg-type]
        notes=_final(result.notes, tmp, out),
    )  # fmt: skip


def _remove_empty(made: list[Path]) -> None:
    """Remove the parent folders this call created (deepest first), where they are still empty."""
    for p in reversed(made):
        try:
            p.rmdir()
        except OSError:
            break


def _final(obj: Any, tmp: Path, out: Path) -> Any:
    """The report with paths inside the temporary folder replaced by their final names."""
    return json.loads(json.dumps(obj).replace(str(tmp), str(out)))


def _pair(ea: EmbeddingRaster, eb: EmbeddingRaster, win: Window, halo: int) -> tuple[np.ndarray, np.ndarray, Window]:
    """Both dates' ``(D, h, w)`` embeddings of ``win`` grown by ``halo`` px (cut at the raster's edge), NaN where
    nodata, and the grown window."""
    r0, c0 = max(0, int(win.row_off) - halo), max(0, int(win.col_off) - halo)
    r1, c1 = min(ea.height, int(win.row_off + win.height) + halo), min(ea.width, int(win.col_off + win.width) + halo)
    big = Window(c0, r0, c1 - c0, r1 - r0)
    return ea.read(big), eb.read(big), big


def _crop(x: np.ndarray, win: Window, big: Window) -> np.ndarray:
    dr, dc = int(win.row_off - big.row_off), int(win.col_off - big.col_off)
    return x[..., dr : dr + int(win.height), dc : dc + int(win.width)]


def _score_fn(
    kind: str, ea: EmbeddingRaster, eb: EmbeddingRaster, opts: dict, notes: list, report: dict
) -> tuple[Any, Any]:
    """The map functions ``(a, b) -> score`` and ``(a, b) -> change level`` (None without a level floor) of two
    ``(D, h, w)`` windows (with ``HALO[kind]`` px of context)."""
    if kind == "fitted":
        head, report["cross_validation"] = fit_head(ea, eb, opts, notes)

        def fitted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            xa, xb = a.reshape(ea.dim, -1).T, b.reshape(eb.dim, -1).T
            ok = valid_rows(xa, xb)
            flat = np.full(ok.shape, np.nan, np.float32)
            if ok.any():
                flat[ok] = change_probability(head, xa[ok], xb[ok])
            return flat.reshape(a.shape[1:])

        return fitted, None
    stats = ScoreStats(kind, ea.dim, seed=opts["seed"])
    for win in ea.windows():
        a, b, big = _pair(ea, eb, win, HALO[kind])
        pa, pb = prepare(a, b, kind)
        stats.add(_crop(pa, win, big), _crop(pb, win, big))
    params = stats.params()
    if "std" in params and "mean" not in params:
        report["cva_pooled_std"] = [round(float(v), 6) for v in params["std"]]
    level = (lambda a, b: level_map(a, b, stats)) if opts["min_level"] > 0 else None
    return (lambda a, b: score_map(a, b, kind, stats=stats)), level


def _write_score(
    ea: EmbeddingRaster, eb: EmbeddingRaster, fn: Any, dst: Path, tags: dict, opts: dict, level_fn: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stream the score map into ``dst`` (float32 COG); return a uniform sample of the valid scores and, with
    ``level_fn`` (``(a, b) -> level`` of two windows), the change level map smoothed as the score is (else None)."""
    from tqdm.auto import tqdm

    halo = HALO[opts["score"]] + max(0, opts["smooth"]) // 2
    rng = np.random.default_rng(opts["seed"])
    keys, sample = np.zeros(0), np.zeros(0, np.float32)
    level = None if level_fn is None else np.full((ea.height, ea.width), np.nan, np.float32)
    writer = GeoTiffWriter(
        dst, height=ea.height, width=ea.width, count=1, crs=ea.crs, transform=ea.transform, dtype="float32",
        descriptions=[f"change_score_{opts['score']}"], tags=tags, compress="zstd", overviews=True,
    )  # fmt: skip
    with writer:
        for win in tqdm(list(ea.windows()), desc="change", unit="window", disable=not opts["progress"]):
            a, b, big = _pair(ea, eb, win, halo)
            block = _crop(smooth_map(fn(a, b), opts["smooth"]), win, big)
            if level is not None:
                r0, c0 = int(win.row_off), int(win.col_off)
                lv = _crop(smooth_map(level_fn(a, b), opts["smooth"]), win, big)
                level[r0 : r0 + lv.shape[0], c0 : c0 + lv.shape[1]] = lv
            writer.write(int(win.row_off), int(win.col_off), block[None])
            v = block[np.isfinite(block)]
            keys, sample = np.concatenate([keys, rng.random(v.size)]), np.concatenate([sample, v])
            if sample.size > OTSU_SAMPLE:
                keep = np.argpartition(keys, OTSU_SAMPLE)[:OTSU_SAMPLE]
                keys, sample = keys[keep], sample[keep]
    return sample, level


def _write_mask(
    score_tif: Path, dst: Path, threshold: float, min_area: float, tags: dict, gate: np.ndarray | None = None
) -> tuple[int, int, int]:
    """The change mask of the score map (1 no change, 2 change, 0 nodata): pixels above ``threshold`` (and in
    ``gate``, where given), changed patches smaller than ``min_area`` m² set to no change; return (changed,
    valid) pixels and the patch size kept (px)."""
    style, colormap = class_map_style(MASK_CLASSES, MASK_COLORS)
    with rasterio.open(score_tif) as src:
        s = src.read(1)
        crs, transform = src.crs, src.transform
    ok = np.isfinite(s)
    centre_y = (transform @ (s.shape[1] / 2, s.shape[0] / 2))[1]
    min_px = min_pixels(min_area, pixel_area_m2(crs, transform, centre_y))
    above = ok & (np.where(ok, s, -np.inf) > threshold)
    changed = drop_small(above if gate is None else above & gate, min_px)
    m = np.where(ok, np.where(changed, 2, 1), 0).astype(np.uint8)
    writer = GeoTiffWriter(
        dst, height=m.shape[0], width=m.shape[1], count=1, crs=crs, transform=transform, dtype="uint8",
        tags={**tags, **style}, colormap=colormap, compress="deflate", overviews=True,
    )  # fmt: skip
    with writer:
        for r in range(0, m.shape[0], 1024):
            writer.write(r, 0, m[None, r : r + 1024])
    return int(changed.sum()), int(ok.sum()), min_px


def _change_into(a: Any, b: Any, tmp: Path, opts: dict[str, Any]) -> ChangeResult:
    notes: list[str] = []
    path_a, path_b = embedded_pair(a, b, tmp, opts, notes)
    with open_embeddings(path_a) as ea, open_embeddings(path_b) as eb:
        notes.extend(check_comparable(ea, eb))
        prov = provenance(ea)
        report: dict[str, Any] = {
            "a": str(a), "b": str(b), "embeddings_a": str(path_a), "embeddings_b": str(path_b), "model": prov.model,
            "model_revision": prov.revision, "model_weights_sha256": prov.weights, "precision": prov.precision,
            "storage": prov.quantization, "score": opts["score"],
            "score_description": DESCRIPTIONS[opts["score"]], "smooth_px": opts["smooth"],
        }  # fmt: skip
        fn, level_fn = _score_fn(opts["score"], ea, eb, opts, notes, report)
        tags = {
            "KIND": "change_score", "CHANGE_SCORE": opts["score"], "CHANGE_SCORE_DESCRIPTION": DESCRIPTIONS[opts["score"]],
            "SMOOTH_PX": str(opts["smooth"]), "SOURCE_A": str(path_a), "SOURCE_B": str(path_b), "MODEL": prov.model,
            "MODEL_REVISION": prov.revision,
        }  # fmt: skip
        sample, level = _write_score(ea, eb, fn, tmp / SCORE, tags, opts, level_fn)
    if sample.size == 0:
        raise EarthEmbedError(f"No pixel has data in both dates ({path_a}, {path_b}); the two do not overlap.")
    if opts["threshold"] is not None:
        thr, how = float(opts["threshold"]), "given"
    elif opts["score"] == "fitted":
        thr, how = FITTED_THRESHOLD, "the head's decision, P(change) > 0.5"
    else:
        thr = auto_threshold(sample, *DEFAULT_RULE, floor=DEFAULT_FLOOR)
        how = describe_rule(*DEFAULT_RULE, sample.size, floor=DEFAULT_FLOOR)
    mask_tags = {**{k: v for k, v in tags.items() if k != "KIND"}, "THRESHOLD": f"{thr:.6g}", "THRESHOLD_METHOD": how,
                 "MIN_AREA_M2": f"{opts['min_area']:g}"}  # fmt: skip
    gate = None
    if level is not None:
        gate = np.isfinite(level) & (np.where(np.isfinite(level), level, -np.inf) > opts["min_level"])
        mask_tags["MIN_LEVEL"] = f"{opts['min_level']:.6g}"
        above = float(gate.sum()) / max(1, int(np.isfinite(level).sum()))
        report.update(min_level=opts["min_level"], level_above_floor_share=above)
    changed, valid, min_px = _write_mask(tmp / SCORE, tmp / MASK, thr, opts["min_area"], mask_tags, gate)
    report.update(threshold=thr, threshold_method=how, min_area_m2=opts["min_area"], min_area_px=min_px,
                  valid_pixels=valid, changed_pixels=changed, changed_share=changed / max(1, valid), notes=notes,
                  created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
    poly = None
    if opts["polygons"]:
        with rasterio.open(tmp / MASK) as m, rasterio.open(tmp / SCORE) as s:
            poly, n = vectorise(
                m.read(1), 2, s.read(1), m.crs, m.transform, tmp / f"{POLYGONS}{FORMATS[opts['polygons']][1]}",
                fmt=opts["polygons"], min_area_m2=opts["min_area"],
            )  # fmt: skip
        report.update(polygons=str(poly), polygon_count=n)
    png = None
    if opts["png"]:
        png = change_png(tmp / SCORE, tmp / MASK, tmp / PNG, threshold=thr, title=opts["score"],
                         changed_share=changed / max(1, valid))  # fmt: skip
    return ChangeResult(
        out_dir=tmp, score=tmp / SCORE, mask=tmp / MASK, report=report, threshold=thr, changed_pixels=changed,
        valid_pixels=valid, png=png, polygons=poly, embeddings=(Path(path_a), Path(path_b)), notes=notes,
    )  # fmt: skip
