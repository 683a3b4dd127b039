"""Helpers shared by the ``earth-embed`` subcommands: model loading, default models, stream options."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from ..errors import EarthEmbedError, InputWarning

DEMO_ARCHITECTURE = "unet-resnet18"
DEMO_EMBED_DIM = 64


def default_model(kind: str = "encoder") -> str | None:
    """The model used when none is given: the released model folder (see ``earth_embed.released``), or None."""
    from ..released import find_released

    return find_released(kind)


def banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("!" * width, file=sys.stderr)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !", file=sys.stderr)
    print("!" * width, file=sys.stderr)


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def model_arg(args: argparse.Namespace, kind: str = "encoder") -> str:
    """The model named by ``--model``, else the released model of ``kind`` ('encoder' or 'segmenter')."""
    name = args.model or default_model(kind)
    if name is None:
        what = "land-cover segmenter" if kind == "segmenter" else "encoder"
        raise EarthEmbedError(
            f"No --model given and no released default {what} is installed. Pass --model with a model folder "
            "(config.json + model.safetensors) or a Hugging Face Hub id such as org/name."
        )
    return name


def load_model(kind: str, name: str, revision: str | None):
    """The ``kind`` model ('encoder' or 'segmenter') from a folder or Hub id."""
    from ..released import load_model as load

    return load(name, kind, revision)


def stream_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
        bands=args.bands,
        dn_offset=args.dn_offset,
        precision=args.precision,
        runtime=args.runtime,
        overwrite=args.overwrite,
        overviews=args.overviews,
        mask=args.mask,
        mask_buffer=args.mask_buffer,
    )


def add_mask_options(p: argparse.ArgumentParser) -> None:
    """``--mask`` and ``--mask-buffer`` (embed, classify, embed-region)."""
    p.add_argument(
        "--mask",
        default="auto",
        metavar="auto|scl|ukis-csmask|FILE|none",
        help="cloud/shadow mask; masked pixels are nodata (default auto: the product's SCL layer, else ukis-csmask "
        "from earth-embed[clouds], else none with a note; FILE: a one-band raster, 0 = clear)",
    )
    add_mask_buffer_option(p)


def add_mask_buffer_option(p: argparse.ArgumentParser, default: int | None = 0, says: str = "0") -> None:
    """``--mask-buffer`` (``default``: its value, ``says``: what the help calls the default)."""
    p.add_argument(
        "--mask-buffer", type=int, default=default, metavar="PX", help=f"grow the mask by PX pixels (default {says})"
    )


def scene_arg(paths: Sequence[str]):
    return paths[0] if len(paths) == 1 else list(paths)


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--runtime``: how the forward runs."""
    from ..precision import DEFAULT_PRECISION, PRECISIONS
    from ..runtime import AUTO_CPU, DEFAULT_RUNTIME, RUNTIMES

    p.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        help=f"the forward's precision (default {DEFAULT_PRECISION}; auto: bf16 on CPUs with native bf16 and on recent "
        "GPUs, fp16 on older GPUs, fp32 elsewhere; what bf16 changes: docs/performance.md)",
    )
    p.add_argument(
        "--runtime",
        default=DEFAULT_RUNTIME,
        choices=RUNTIMES,
        help=f"what runs the forward (default {DEFAULT_RUNTIME}; onnx / onnx-int8: ONNX Runtime on the CPU at fp32, the "
        f"onnx extra; auto: the fastest kept path measured, {AUTO_CPU} on CPUs at fp32, torch elsewhere; "
        "docs/performance.md)",
    )


def add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", help="model folder or Hugging Face Hub id (default: the released model, if any)")
    p.add_argument("--revision", help="Hub branch, tag or commit of the model")
    p.add_argument(
        "--bands",
        nargs="+",
        metavar="BAND",
        help="names of the input's bands in file order (for a multi-band file without band descriptions)",
    )
    p.add_argument(
        "--tile", type=int, help="window size in px: a block plus its halo on both sides (default 1024 + 2 x 48 = 1120)"
    )
    p.add_argument("--overlap", type=int, help="overlap between windows in px, twice the halo (default 96)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default 1 on CPU, 4 on CUDA)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    add_precision_option(p)
    p.add_argument(
        "--dn-offset", type=float, help="DN offset, e.g. -1000 for processing baseline >= 04.00 (default: the model's)"
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument(
        "--overviews", action="store_true", help="add internal overviews (one more pass through GDAL's COG driver)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_mask_options(p)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C, so every temporary file is removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


class _StderrHandler(logging.Handler):
    """Log records as ``earth-embed CMD: level: message`` on the current ``sys.stderr``."""

    def __init__(self, command: str) -> None:
        super().__init__(logging.INFO)
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        level = "note" if record.levelno <= logging.INFO else record.levelname.lower()
        print(f"earth-embed {self.command}: {level}: {record.getMessage()}", file=sys.stderr)


@contextlib.contextmanager
def cli_session(command: str) -> Iterator[None]:
    """For one command: SIGTERM/SIGINT unwind with cleanup, warnings and notes print as
    ``earth-embed CMD: warning: ...``; everything is restored afterwards.

    Warnings about the input (:class:`InputWarning`: a likely missing DN offset, display images, negative
    values...) are printed every time, whatever ``PYTHONWARNINGS`` or ``-W`` say: they are part of the
    command's output, not Python's warning machinery."""
    in_main = threading.current_thread() is threading.main_thread()
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    for signum in old_handlers:
        signal.signal(signum, _raise_interrupted)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        kind = "warning" if issubclass(category, InputWarning) else category.__name__
        print(f"earth-embed {command}: {kind}: {message}", file=sys.stderr)

    log = logging.getLogger("earth_embed")
    handler, old_level, old_propagate = _StderrHandler(command), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with warnings.catch_warnings():  # restores the filters and showwarning afterwards
            warnings.filterwarnings("always", category=InputWarning)  # ahead of an "ignore" from PYTHONWARNINGS
            warnings.showwarning = show
            yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate
        for signum, old in old_handlers.items():
            signal.signal(signum, old)
