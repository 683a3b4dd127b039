"""The engine interface: run a plan's work units with a model factory into a sink.

An engine is a function ``engine(plan, units, model_factory, sink, options) -> RunSummary``:

- ``plan`` (:class:`~earth_embed.tiling.plan.RegionPlan`) and ``units`` (the units still to do,
  a subset of ``plan.units``) are picklable and can be shipped to workers;
- ``model_factory()`` returns the model (called once per worker; the engine puts it in eval mode
  on ``options.device`` with :func:`model_on`);
- for each unit the engine calls :func:`~earth_embed.tiling.unit.read_unit` (CPU) and
  :func:`~earth_embed.tiling.unit.compute_unit` (model) and hands the encoded array to
  ``sink.write_unit(unit, data)`` — at most one writer per unit, each unit whole;
- a unit whose scene cannot be read raises :class:`~earth_embed.errors.RasterInputError`: with
  ``options.on_error == "stop"`` the engine re-raises it, with ``"skip"`` it records
  ``(unit.key, message)`` in ``RunSummary.failed`` and goes on (the unit is not written).

:func:`run_plan` is the entry point: it skips units the sink already holds (resume), picks the
engine by name (:data:`ENGINES`; ``"ray"`` lives in :mod:`earth_embed.tiling.engine_ray`, imported only
when asked for), runs it with GDAL's block cache held to :data:`GDAL_CACHE_MB` and returns the summary.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import rasterio
import torch

from ..allocator import keep_freed_memory, release_fragments
from ..errors import RasterInputError
from ..precision import DEFAULT_PRECISION
from ..runtime import DEFAULT_RUNTIME
from .plan import RegionPlan, WorkUnit
from .unit import DEFAULT_MEMORY_FORMAT, UnitInput, UnitOutput, check_memory_format, compute_unit

#: GDAL's block cache (MB) while a plan runs (reads and GeoTIFF writes in this process): a constant, whatever the
#: region's size. GDAL's default, 5 % of RAM, let the reader's memory grow with the data read: reading every unit of
#: a 4 / 16 Mpx region (no model) raised the peak RSS by 131 / 372 MB, and by 51 / 53 MB with this cap (2026-12-07).
GDAL_CACHE_MB = 128
#: Engine name -> "module:function", imported on first use.
ENGINES = {"local": "earth_embed.tiling.engine_local:run_local", "ray": "earth_embed.tiling.engine_ray:run_ray"}


class UnitSink(Protocol):
    """Where finished units go: the Zarr store, or a GeoTIFF for a single scene."""

    def is_done(self, unit: WorkUnit) -> bool:
        """True when ``unit`` was written completely by an earlier run."""
        ...

    def write_unit(self, unit: WorkUnit, out: UnitOutput) -> None:
        """Write the whole computed unit ``out`` (its ``data``, C x unit.height x unit.width, and for int8 its
        per-pixel ``scales``); then mark it done."""
        ...


@dataclass(frozen=True)
class RunOptions:
    """How units are computed. ``output``: one of :data:`~earth_embed.tiling.unit.OUTPUTS`."""

    output: str = "int8"
    device: str | None = None  # None: CUDA when available, else CPU
    batch_size: int = 1
    dn_offset: float | None = None  # for scenes without their own
    on_error: str = "stop"  # or "skip": a unit with an unreadable scene is reported, not written
    progress: bool = True
    desc: str = "units"
    workers: int | None = None  # engines with workers (ray); None: the engine's default
    address: str | None = None  # ray: an existing cluster
    runtime_env: dict | None = None  # ray: the runtime_env of every task and actor (e.g. {"pip": [...]})
    precision: str = DEFAULT_PRECISION  # auto | fp32 | bf16 | fp16 (earth_embed.precision)
    timeout: float | None = None  # ray: seconds to join and check the cluster (earth_embed.tiling.ray_connect)
    memory_format: str = DEFAULT_MEMORY_FORMAT  # contiguous | channels_last: the model's and inputs' layout
    runtime: str = DEFAULT_RUNTIME  # auto | torch | onnx | onnx-int8: what runs the forward (earth_embed.runtime)

    def compute(self, model: Any, inputs: UnitInput) -> UnitOutput:
        """:func:`~earth_embed.tiling.unit.compute_unit` of a read unit as these options say (every engine's)."""
        out = compute_unit(
            model,
            inputs,
            self.output,
            dn_offset=self.dn_offset,
            batch_size=self.batch_size,
            precision=self.precision,
            memory_format=self.memory_format,
            runtime=self.runtime,
        )
        release_fragments()  # the forward's buffers are free now: a heap grown by differing unit shapes shrinks
        return out


@dataclass
class RunSummary:
    """What a run did."""

    done: int = 0
    skipped: int = 0  # already in the sink (resume)
    pixels: int = 0  # output pixels computed
    seconds: float = 0.0
    failed: list[tuple[str, str]] = field(default_factory=list)
    worker_peak_rss_mb: float = 0.0  # largest peak RSS of a worker process (engines with workers: ray)
    #: The units' own clock: wall seconds from the first unit's compute start to the last unit written, so
    #: start-up and model loads are outside it. 0 when no unit was computed.
    unit_seconds: float = 0.0
    model_load_seconds: float = 0.0  # the longest model load (once per run locally, once per actor in Ray)

    @property
    def px_per_s(self) -> float:
        return self.pixels / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        text = (
            f"{self.done} unit(s) computed, {self.skipped} already done (skipped), "
            f"{self.pixels / 1e6:.2f} Mpx in {self.seconds:.1f} s ({self.px_per_s:,.0f} px/s)"
        )
        if self.failed:
            text += f"; {len(self.failed)} unit(s) FAILED: " + "; ".join(f"{k}: {m}" for k, m in self.failed)
        return text


class Engine(Protocol):
    def __call__(
        self,
        plan: RegionPlan,
        units: Sequence[WorkUnit],
        model_factory: Callable[[], Any],
        sink: UnitSink,
        options: RunOptions,
    ) -> RunSummary: ...


def get_engine(name: str) -> Engine:
    """The engine function registered under ``name`` (imports its module now)."""
    if name not in ENGINES:
        raise RasterInputError(f"engine={name!r} is not known; use one of {', '.join(ENGINES)}.")
    module, func = ENGINES[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise RasterInputError(
            f'The {name} engine is not available ({err}); install it with pip install "earth-embed[{name}]".'
        ) from err
    return getattr(mod, func)


def run_plan(
    plan: RegionPlan,
    model_factory: Callable[[], Any],
    sink: UnitSink,
    options: RunOptions | None = None,
    engine: str = "local",
) -> RunSummary:
    """Run every unit of ``plan`` that ``sink`` does not hold yet on ``engine``; return the summary."""
    options = options or RunOptions()
    if options.on_error not in ("stop", "skip"):
        raise RasterInputError(f"on_error={options.on_error!r}; use 'stop' or 'skip'.")
    check_memory_format(options.memory_format)
    run = get_engine(engine)
    todo = [u for u in plan.units if not sink.is_done(u)]
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), keep_freed_memory():  # blocks reuse their activations' pages
        summary = run(plan, todo, model_factory, sink, options) if todo else RunSummary()
    summary.skipped = len(plan.units) - len(todo)
    summary.seconds = summary.seconds or time.perf_counter() - t0
    return summary


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; None -> CUDA when available. Clear error when CUDA is missing."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RasterInputError(f"device={device!r} was asked for but CUDA is not available; use device='cpu'.")
    return dev


@contextlib.contextmanager
def model_on(
    model: torch.nn.Module, device: torch.device, memory_format: str = DEFAULT_MEMORY_FORMAT
) -> Iterator[torch.nn.Module]:
    """Eval mode on ``device`` for the run, and with ``memory_format="channels_last"`` its 4-D weights in that
    layout; the model's mode, device and (contiguous) layout are restored afterwards."""
    layout = check_memory_format(memory_format)
    was_training = model.training
    try:
        old = next(model.parameters()).device
    except StopIteration:
        old = torch.device("cpu")
    convert = layout == torch.channels_last and all(p.is_contiguous() for p in model.parameters())
    model.eval().to(device)
    if convert:
        model.to(memory_format=layout)
    try:
        yield model
    finally:
        model.train(was_training).to(old)
        if convert:
            model.to(memory_format=torch.contiguous_format)
