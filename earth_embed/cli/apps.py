"""Map commands of ``earth-embed`` on frozen embeddings: fit (few-shot land cover), similar, cluster, change."""

from __future__ import annotations

import argparse
import time

from ..errors import LabelError
from .common import add_mask_buffer_option, scene_arg, set_threads


def _lonlat(text: str) -> tuple[float, float]:
    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LON,LAT (e.g. -75.62,37.79)") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise argparse.ArgumentTypeError(f"{text!r} is not a longitude,latitude pair in degrees (longitude first)")
    return lon, lat


def cmd_fit(args: argparse.Namespace) -> int:
    from ..apps import fit
    from ..apps.heads import cv_markdown

    set_threads(args)
    t0 = time.perf_counter()
    result = fit(
        scene_arg(args.src),
        args.labels,
        args.out,
        model=args.model,
        revision=args.revision,
        column=args.column,
        head=args.head,
        folds=args.folds,
        block_size=args.block_size,
        n_neighbors=args.neighbors,
        probabilities=args.probabilities,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
    report = result.report
    for note in result.notes:
        print(f"note: {note}")
    print(cv_markdown(report, report["classes"], report["counts"]))
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"wrote {result.class_map} (class map), {result.legend} (map + legend), {result.out_dir / 'cv_report.json'}")
    if result.probabilities:
        print(f"wrote {result.probabilities} (one band per class)")
    if result.segmenter:
        print(
            f"wrote {result.segmenter} (EarthSegmenter: earth-embed classify SCENE map.tif --model {result.segmenter})"
        )
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from ..apps import similar

    if not args.point and not args.polygon:
        raise LabelError("Give the query: --point LON,LAT (repeatable) or --polygon FILE.")
    out = similar(
        args.emb,
        args.out,
        points=args.point or None,
        polygon=args.polygon,
        png=False if args.no_png else (args.png or True),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"wrote {out} (cosine similarity, float32)"
        + ("" if args.no_png else f" and {args.png or out.with_suffix('.png')}")
    )
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from ..apps import cluster

    out = cluster(
        args.emb,
        args.out,
        k=args.k,
        sample=args.sample,
        seed=args.seed,
        png=False if args.no_png else (args.png or True),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"wrote {out} ({args.k} clusters, uint8)"
        + ("" if args.no_png else f" and {args.png or out.with_suffix('.png')}")
    )
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    from ..apps import change

    set_threads(args)
    t0 = time.perf_counter()
    result = change(
        args.a,
        args.b,
        args.out,
        score=args.score,
        labels=args.labels,
        column=args.column,
        change_class=args.change_class,
        threshold=args.threshold,
        smooth=args.smooth,
        polygons=args.polygons,
        min_area=args.min_area,
        min_level=args.min_level,
        model=args.model,
        revision=args.revision,
        folds=args.folds,
        block_size=args.block_size,
        seed=args.seed,
        png=not args.no_png,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
        mask_buffer=args.mask_buffer,
    )
    report = result.report
    for note in result.notes:
        print(f"note: {note}")
    cv = report.get("cross_validation")
    if cv:
        iou = cv["per_class_iou"]
        print(
            f"fitted head, blocked {cv['folds']}-fold cross-validation on {sum(cv['counts'].values())} labelled px: "
            f"IoU change {100 * iou['change']:.1f} %, no change {100 * iou['no change']:.1f} %"
        )
        for warning in cv["warnings"]:
            print(f"warning: {warning}")
    share = 100 * result.changed_pixels / max(1, result.valid_pixels)
    print(
        f"score {report['score']}"
        + (f", {report['smooth_px']} x {report['smooth_px']} box mean" if report["smooth_px"] > 1 else "")
        + f"; threshold {result.threshold:.4g} ({report['threshold_method']}): {result.changed_pixels} of "
        f"{result.valid_pixels} px changed ({share:.2f} %, patches under {report['min_area_m2']:g} m² dropped"
        + (f", change level at most {report['min_level']:.3g} is no change" if "min_level" in report else "")
        + ")"
    )
    print(f"wrote {result.score} (score, float32 COG), {result.mask} (mask: 1 no change, 2 change, 0 nodata)")
    if result.png:
        print(f"wrote {result.png} (score and mask)")
    if result.polygons:
        print(f"wrote {result.polygons} ({report['polygon_count']} polygons of >= {report['min_area_m2']:g} m²)")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    """Add fit, similar, cluster and change to the ``earth-embed`` parser."""
    p = sub.add_parser(
        "fit",
        help="few-shot land cover: fit a head on labelled points/polygons, map the scene, save a segmenter",
        description="Fit a light head (logistic regression on standardised embeddings, or cosine kNN) on "
        "labelled pixels, report a spatially blocked cross-validation (overall accuracy, per-class IoU, "
        "confusion matrix), and write OUT/classes.tif + classes.png, OUT/cv_report.json, optionally "
        "OUT/probabilities.tif and, for the logistic head, OUT/segmenter/ (an EarthSegmenter for "
        "`earth-embed classify`). Needs: pip install 'earth-embed[apps]'.",
    )
    p.add_argument(
        "src",
        nargs="+",
        metavar="EMB_OR_SCENE",
        help="embeddings (GeoTIFF of `embed`, region COG or OUT.zarr store), or a scene to embed",
    )
    p.add_argument("labels", metavar="LABELS", help="vector file (GeoJSON, GPKG, SHP, FGB; any CRS) or label raster")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--model", "-m", help="encoder (default: the one named in the embeddings, or the released one)")
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument("--column", default="class", help="attribute holding the class names (default: class)")
    p.add_argument("--head", default="logistic", choices=["logistic", "knn"], help="the classifier (default: logistic)")
    p.add_argument("--neighbors", type=int, default=5, help="k of the kNN head (default 5)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument(
        "--block-size", type=int, default=256, help="side of the held-out squares in px (default 256 = 2.56 km at 10 m)"
    )
    p.add_argument("--probabilities", action="store_true", help="also write OUT/probabilities.tif")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the head")
    p.add_argument("--device", help="device for embedding a scene (cpu, cuda ...)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    _common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser(
        "similar",
        help="cosine similarity of every pixel to query points or polygons (GeoTIFF + PNG)",
        description="Write the cosine similarity of every pixel's embedding to the mean embedding of the "
        "query pixels (points in longitude/latitude, or every pixel of the features in a vector file), "
        "streamed into a float32 GeoTIFF, plus a PNG. Needs: pip install 'earth-embed[apps]'.",
    )
    p.add_argument("emb", help="embeddings: GeoTIFF of `earth-embed embed`, a region COG or an OUT.zarr store")
    p.add_argument(
        "--point",
        action="append",
        type=_lonlat,
        metavar="LON,LAT",
        help="a query point in degrees, repeatable; write --point=LON,LAT (with =) when the longitude is negative",
    )
    p.add_argument("--polygon", metavar="FILE", help="vector file whose features' pixels form the query")
    p.add_argument("--out", required=True, help="output GeoTIFF")
    p.add_argument("--png", help="PNG path (default: OUT with .png)")
    p.add_argument("--no-png", action="store_true", help="no PNG")
    _common(p)
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser(
        "cluster",
        help="k-means clusters of the embeddings as a class map (GeoTIFF + PNG)",
        description="Fit k-means on a uniform sample of valid pixels (unit-length embeddings), assign every "
        "pixel window by window and write a uint8 map (clusters 1..K by size, 0 = nodata) with a colour "
        "table, plus a PNG with a legend. Needs: pip install 'earth-embed[apps]'.",
    )
    p.add_argument("emb", help="embeddings: GeoTIFF of `earth-embed embed`, a region COG or an OUT.zarr store")
    p.add_argument("--k", type=int, required=True, help="number of clusters (2..254)")
    p.add_argument("--out", required=True, help="output GeoTIFF")
    p.add_argument("--sample", type=int, default=50_000, help="pixels k-means is fitted on (default 50000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and k-means")
    p.add_argument("--png", help="PNG path (default: OUT with .png)")
    p.add_argument("--no-png", action="store_true", help="no PNG")
    _common(p)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser(
        "change",
        help="change between two dates: score COG, change mask, PNG (and polygons) from two embeddings or scenes",
        description="Score the change of every pixel from date A to date B with a zero-shot score of the two "
        "embeddings (default: the one chosen on 10 labelled OSCD cities), or a head fitted on labelled change / "
        "no-change pixels (--labels); threshold it (by default a robust rule chosen on the same cities, or "
        "--threshold) into a mask, drop changed patches under --min-area; write OUT/score.tif (float32 COG), "
        "OUT/mask.tif, OUT/change.png, OUT/change_report.json and, with --polygons, OUT/changes.gpkg or .geojson. "
        "A and B are embeddings of one model on one grid (refused otherwise), or scenes (both embedded with one "
        "model, B onto A's grid). Needs: pip install 'earth-embed[apps]'.",
    )
    p.add_argument("a", metavar="A", help="earlier date: embeddings (GeoTIFF, region COG, OUT.zarr group) or a scene")
    p.add_argument("b", metavar="B", help="later date: embeddings on A's grid, or a scene (resampled onto A's grid)")
    p.add_argument("out", metavar="OUT", help="output folder (must not exist unless --overwrite; parents are created)")
    p.add_argument("--score", help="cos, cva, cva-box3, shift-min, whitened, whitened-box5 or fitted (default: the "
                   "zero-shot default of earth_embed.apps.change_scores.DEFAULT_SCORE, or fitted with --labels)")  # fmt: skip
    p.add_argument("--labels", metavar="FILE", help="change / no-change points or polygons (vector, any CRS) or a "
                   "label raster on A's grid: fits a logistic head on [|a - b|, a, b]")  # fmt: skip
    p.add_argument("--column", default="class", help="attribute holding the class names (default: class)")
    p.add_argument("--change-class", help="the label class that means change (default: one named change/changed/yes/1)")
    p.add_argument("--threshold", type=float, help="score above which a pixel is change (default: the rule of "
                   "earth_embed.apps.change_mask.DEFAULT_RULE; P(change) > 0.5 for fitted)")  # fmt: skip
    p.add_argument("--smooth", type=int, metavar="K", help="box mean of the score over K x K px (odd; 0: none; "
                   "default: change_mask.DEFAULT_SMOOTH)")  # fmt: skip
    p.add_argument("--polygons", choices=["gpkg", "geojson"], help="also write the change polygons in this format")
    p.add_argument("--min-area", type=float, metavar="M2", help="smallest changed patch kept in the mask and as a "
                   "polygon, in m² (default: change_mask.DEFAULT_MIN_AREA_M2)")  # fmt: skip
    p.add_argument("--min-level", type=float, metavar="L", help="change level (a fixed scale: RMS of the standardised "
                   "difference of the box-averaged embeddings) a changed pixel must exceed, so that a quiet pair stays "
                   "quiet; whitened scores only (default: change_mask.DEFAULT_LEVEL with the default score and "
                   "threshold rule; 0: none)")  # fmt: skip
    p.add_argument(
        "--model", "-m", help="encoder for scenes (default: the one named in the other input, or the released one)"
    )
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the fitted head (default 5)")
    p.add_argument("--block-size", type=int, default=256, help="side of the held-out squares in px (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds, the head and the threshold sample")
    p.add_argument("--no-png", action="store_true", help="no PNG")
    p.add_argument("--device", help="device for embedding scenes (cpu, cuda ...)")
    add_mask_buffer_option(p, None, "change_sources.DEFAULT_MASK_BUFFER; scenes are masked with --mask auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    _common(p)
    p.set_defaults(func=cmd_change)
