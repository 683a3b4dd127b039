"""Read and compute one work unit of a :class:`~earth_embed.tiling.plan.RegionPlan`.

Two steps, so that engines can run them in different places (Ray reads in CPU tasks and computes
in model actors): :func:`read_unit` (CPU, no model) reads the input windows of every compute
block and decides, per pixel, which scene provides it; :func:`compute_unit` runs the model over
those windows, trims each to its block and encodes the result (:data:`OUTPUTS`). Both are plain
functions of picklable values. :func:`run_unit` does both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from .. import kernels, quantize
from ..errors import EarthEmbedError
from ..inputs.masks import open_mask
from ..precision import autocast_for, resolve_precision
from ..runtime import DEFAULT_RUNTIME, ONNX_RUNTIMES, resolve_runtime
from .plan import RegionPlan, WorkUnit

#: What a unit can be encoded as: int8 codes + per-pixel scales (:mod:`.quantize`), float16/float32 embeddings
#: (NaN nodata), or uint8 class indices + 1 (0 nodata) from a segmenter's logits.
OUTPUTS = ("int8", "float16", "float32", "classes")
_NODATA = {"int8": quantize.NODATA, "float16": np.nan, "float32": np.nan, "classes": 0}
_DTYPES = {"int8": np.int8, "float16": np.float16, "float32": np.float32, "classes": np.uint8}
#: Memory layouts the model can run in: ``contiguous`` (NCHW: the model as given, each batch as read) or
#: ``channels_last`` (NHWC: the model's 4-D weights and each input batch converted; oneDNN's own layout on CPUs).
MEMORY_FORMATS = ("contiguous", "channels_last")
#: What runs use (RunOptions.memory_format; scene and region pipelines alike): channels_last, the local engine 1.24x
#: faster than contiguous on the 2-core CPU (benchmarks/region_throughput.py, 2026-12-06; docs/benchmarks.md).
DEFAULT_MEMORY_FORMAT = "channels_last"
_LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def check_memory_format(name: str) -> torch.memory_format:
    """The torch layout of ``name`` (one of :data:`MEMORY_FORMATS`), or a clear error."""
    if name not in _LAYOUTS:
        raise EarthEmbedError(f"memory_format={name!r} is not known; use one of {', '.join(MEMORY_FORMATS)}.")
    return _LAYOUTS[name]


@dataclass
class Piece:
    """One model window: ``dn`` (C, h, w) raw DN read from scene ``scene``, its input validity
    ``valid`` (h, w), and the block part it provides: window rows/cols ``core`` = (r, c, h, w),
    placed at unit-local ``dest`` = (r, c), pixels ``take`` (h, w) of that core."""

    scene: int
    dn: np.ndarray
    valid: np.ndarray
    core: tuple[int, int, int, int]
    dest: tuple[int, int]
    take: np.ndarray


@dataclass
class UnitInput:
    """Everything :func:`compute_unit` needs for one unit (numpy only: cheap to ship to a worker)."""

    unit: WorkUnit
    pieces: list[Piece] = field(default_factory=list)
    dn_offsets: dict[int, float | None] = field(default_factory=dict)  # per scene index
    observed: int = 0  # unit pixels with a valid input in some scene
    masked: int = 0  # of those, pixels that every such scene's cloud/shadow mask hides (nodata in the output)

    @property
    def nbytes(self) -> int:
        return sum(p.dn.nbytes for p in self.pieces)


class SceneCache:
    """Scenes (and their cloud/shadow masks) opened once per process and reused across units; close with
    :meth:`close` or ``with``."""

    def __init__(self, plan: RegionPlan) -> None:
        self.plan = plan
        self._open: dict[int, Any] = {}
        self._masks: dict[int, Any] = {}

    def get(self, index: int) -> Any:
        if index not in self._open:
            spec = self.plan.scenes[index].spec
            scene = spec.open()
            try:
                self._masks[index] = open_mask(spec.mask, scene, spec.dn_offset or 0.0)
            except Exception:
                scene.close()
                raise
            self._open[index] = scene
        return self._open[index]

    def mask(self, index: int) -> Any:
        """The open mask source of scene ``index`` (None: no mask); :meth:`get` it first."""
        return self._masks.get(index)

    def close(self) -> None:
        for mask in self._masks.values():
            if mask is not None:
                mask.close()
        self._masks.clear()
        for scene in self._open.values():
            scene.close()
        self._open.clear()

    def __enter__(self) -> SceneCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_unit(plan: RegionPlan, unit: WorkUnit, scenes: SceneCache | None = None) -> UnitInput:
    """Read the input windows of ``unit``: per compute block, scenes in priority order until every
    pixel has a clear input (a scene adds a piece only where it is valid, not masked as cloud or shadow, and
    nothing earlier was): the latest clear pixel wins, and a masked pixel never hides a clear one."""
    own = scenes is None
    cache = SceneCache(plan) if scenes is None else scenes
    out = UnitInput(unit, dn_offsets={i: plan.scenes[i].spec.dn_offset for i in unit.scenes})
    try:
        for br, bc, bh, bw in plan.blocks(unit):
            gr, gc = unit.row + br, unit.col + bc  # block origin on the group grid
            filled = np.zeros((bh, bw), bool)
            seen = np.zeros((bh, bw), bool)  # a valid input in some scene, clear or masked
            for si in unit.scenes:
                ps = plan.scenes[si]
                r0, r1 = max(gr, ps.row), min(gr + bh, ps.row + ps.height)
                c0, c1 = max(gc, ps.col), min(gc + bw, ps.col + ps.width)
                if r1 <= r0 or c1 <= c0 or filled[r0 - gr : r1 - gr, c0 - gc : c1 - gc].all():
                    continue
                wr, wc, wh, ww = plan.window(ps, r0, c0, r1 - r0, c1 - c0)
                scene = cache.get(si)
                dn = scene.read(Window(wc, wr, ww, wh), bands=plan.bands)
                valid = scene.valid_mask(Window(wc, wr, ww, wh), plan.bands, data=dn) & np.isfinite(dn).all(axis=0)
                core = (r0 - ps.row - wr, c0 - ps.col - wc, r1 - r0, c1 - c0)
                inner = valid[core[0] : core[0] + core[2], core[1] : core[1] + core[3]]
                seen[r0 - gr : r1 - gr, c0 - gc : c1 - gc] |= inner
                region = filled[r0 - gr : r1 - gr, c0 - gc : c1 - gc]
                mask = cache.mask(si)
                if mask is not None and (inner & ~region).any():  # cloud and shadow are neither taken nor fed to
                    # the model (they enter as 0); a window with nothing to give is not looked at
                    valid &= ~mask.masked(Window(wc, wr, ww, wh), dn, list(plan.bands))
                take = valid[core[0] : core[0] + core[2], core[1] : core[1] + core[3]] & ~region
                if not take.any():
                    continue
                region |= take
                out.pieces.append(Piece(si, dn, valid, core, (r0 - unit.row, c0 - unit.col), take))
                if filled.all():
                    break
            out.observed += int(seen.sum())
            out.masked += int((seen & ~filled).sum())
    finally:
        if own:
            cache.close()
    return out


@dataclass
class UnitOutput:
    """A computed unit: ``data`` (C, h, w) in the run's encoding; for int8, ``scales`` (h, w) float32
    holds each pixel's scale (:mod:`.quantize`: value = code * scale, NaN where nodata)."""

    data: np.ndarray
    scales: np.ndarray | None = None
    observed: int = 0  # as UnitInput: pixels with a valid input, and those hidden by a cloud/shadow mask
    masked: int = 0


def empty_output(unit: WorkUnit, output: str, channels: int) -> UnitOutput:
    """A unit-sized output of nodata in the encoding ``output``."""
    data = np.full((channels, unit.height, unit.width), _NODATA[output], dtype=_DTYPES[output])
    scales = np.full((unit.height, unit.width), np.nan, np.float32) if output == "int8" else None
    return UnitOutput(data, scales)


def _place(out: UnitOutput, values: Any, piece: Piece, output: str) -> None:
    """Write model output ``values`` of ``piece``'s core into ``out`` at its ``take`` pixels: ``(C, h, w)``
    floats, or for ``int8`` the ``(codes, scales)`` already encoded by :func:`.quantize.quantize_tensor`."""
    r, c, h, w = piece.core
    dr, dc = piece.dest
    take = piece.take
    target = out.data[:, dr : dr + h, dc : dc + w]
    if output == "int8":
        codes, scales = values
        np.copyto(target, codes[:, r : r + h, c : c + w], where=take[None])
        assert out.scales is not None
        np.copyto(out.scales[dr : dr + h, dc : dc + w], scales[r : r + h, c : c + w], where=take)
        return
    core = values[:, r : r + h, c : c + w]
    if output == "classes":
        target[:, take] = core[:, take].argmax(axis=0).astype(np.uint8) + 1
    else:
        target[:, take] = core[:, take].astype(_DTYPES[output])


def _model_input(
    model: Any, batch: list[Piece], offset: float | None, device: torch.device, layout: torch.memory_format
) -> torch.Tensor:
    """The normalised batch in ``layout`` on ``device``. Invalid pixels (nodata, NaN) enter as 0, the normalised
    mean (selected, not multiplied: NaN * 0 is NaN, and the convolutions would spread it to valid pixels). On the
    CPU the fused kernel writes each image into the batch (:meth:`EarthEncoder.normalize_into`), in one pass; a
    model with only ``normalize`` (a wrapper) gets the same values from torch ops."""
    if device.type == "cpu" and hasattr(model, "normalize_into"):
        c, h, w = batch[0].dn.shape
        xin = torch.empty((len(batch), c, h, w), dtype=torch.float32, memory_format=layout)
        for k, p in enumerate(batch):
            model.normalize_into(p.dn, p.valid, xin[k], offset)
        return xin
    x, v = torch.from_numpy(np.stack([p.dn for p in batch])), torch.from_numpy(np.stack([p.valid for p in batch]))
    if device.type == "cuda":
        x, v = x.pin_memory().to(device, non_blocking=True), v.pin_memory().to(device, non_blocking=True)
    return torch.where(v[:, None], model.normalize(x, offset), 0.0).contiguous(memory_format=layout)


def _encode_piece(out: UnitOutput, values: torch.Tensor, piece: Piece) -> None:
    """Encode a CPU piece's model output ``values`` (``(C, h, w)``) by the int8 rule into ``out`` at its
    ``take`` pixels (:func:`earth_embed.kernels.quantize_into`: the bits of :func:`.quantize.quantize_tensor`)."""
    r, c, h, w = piece.core
    dr, dc = piece.dest
    assert out.scales is not None
    core = values[:, r : r + h, c : c + w].permute(1, 2, 0)
    kernels.quantize_into(core, out.data[:, dr : dr + h, dc : dc + w], out.scales[dr : dr + h, dc : dc + w], piece.take)


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _batches(pieces: list[Piece], batch_size: int, offsets: dict) -> Iterator[list[Piece]]:
    """Consecutive pieces of equal window shape and DN offset, at most ``batch_size`` each."""
    batch: list[Piece] = []
    for p in pieces:
        first = batch[0] if batch else p
        if batch and (
            len(batch) == batch_size or p.dn.shape != first.dn.shape or offsets.get(p.scene) != offsets.get(first.scene)
        ):
            yield batch
            batch = []
        batch.append(p)
    if batch:
        yield batch


def compute_unit(
    model: Any,
    inputs: UnitInput,
    output: str = "int8",
    *,
    dn_offset: float | None = None,
    batch_size: int = 1,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    precision: str = "fp32",
    memory_format: str = DEFAULT_MEMORY_FORMAT,
    runtime: str = DEFAULT_RUNTIME,
) -> UnitOutput:
    """Run ``model`` (eval mode, on its device) over a read unit and return it encoded.

    ``result.data`` is ``(C, unit.height, unit.width)``: int8 codes (with ``result.scales``),
    float16/float32 embeddings or uint8 classes, nodata where no scene has a valid input. Input pixels that are nodata are fed
    to the model as 0 (the normalised mean). ``dn_offset`` applies to scenes without their own.
    ``forward`` replaces ``model(x)`` (e.g. a compiled model); normalisation is ``model.normalize`` (on the CPU
    ``model.normalize_into``).
    ``precision``: autocast of the forward (:func:`earth_embed.precision.autocast_for`; outputs are float32).
    ``memory_format``: the layout of each input batch (:data:`MEMORY_FORMATS`); the engines put the model in the
    same layout (:func:`earth_embed.tiling.engine.model_on`); ``result.data`` is contiguous either way.
    ``runtime``: what runs the forward (:mod:`earth_embed.runtime`): torch, or ONNX Runtime (``onnx``, ``onnx-int8``:
    fp32 inputs in NCHW, whatever ``memory_format``); ``auto`` resolves on the model's device and precision.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output={output!r}; use one of {', '.join(OUTPUTS)}")
    layout = check_memory_format(memory_format)
    unit = inputs.unit
    classes = len(getattr(model, "classes", None) or []) if output == "classes" else 0
    channels = 1 if output == "classes" else int(model.embed_dim)
    result = empty_output(unit, output, channels)
    device = _device_of(model)
    used = resolve_runtime(runtime, device, resolve_precision(precision, device))
    if used in ONNX_RUNTIMES and forward is None:
        from ..onnx_forward import onnx_forward

        forward, layout = onnx_forward(model, used), torch.contiguous_format
    run = forward or model
    for batch in _batches(inputs.pieces, max(1, int(batch_size)), inputs.dn_offsets):
        own = inputs.dn_offsets.get(batch[0].scene)
        offset = own if own is not None else dn_offset
        with torch.inference_mode(), autocast_for(precision, device):
            xin = _model_input(model, batch, offset, device, layout)
            raw = run(xin)
            if output == "int8" and raw.device.type == "cpu":  # each piece's core straight into the unit's
                # arrays by the fused kernel (channels last: a pixel's values side by side), halo left out
                if raw.dtype not in (torch.float32, torch.bfloat16):
                    raw = raw.float()
                raw = raw.contiguous(memory_format=torch.channels_last)
                for k, p in enumerate(batch):
                    _encode_piece(result, raw[k], p)
                continue
            raw = raw.float()
            if output == "int8":  # encoded on the GPU, then copied back: the codes are a quarter of the bytes
                codes_t, scales_t = quantize.quantize_tensor(raw, dim=1)
                codes, scales = codes_t.contiguous().cpu().numpy(), scales_t.contiguous().cpu().numpy()
            else:
                raw = raw.contiguous()
        if output == "int8":
            for k, p in enumerate(batch):
                _place(result, (codes[k], scales[k]), p, output)
            continue
        values = raw.cpu().numpy()
        if classes and values.shape[1] != classes:
            raise ValueError(f"the segmenter returned {values.shape[1]} channels for {classes} classes")
        for k, p in enumerate(batch):
            _place(result, values[k], p, output)
    result.observed, result.masked = inputs.observed, inputs.masked
    return result


def run_unit(model: Any, plan: RegionPlan, unit: WorkUnit, output: str = "int8", **kwargs: Any) -> UnitOutput:
    """:func:`read_unit` then :func:`compute_unit`: one unit, start to end, in this process."""
    return compute_unit(model, read_unit(plan, unit), output, **kwargs)
