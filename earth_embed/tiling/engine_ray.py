"""The Ray engine: Ray Data reads unit windows in CPU tasks, a pool of actors holds the model.

``pip install "earth-embed[ray]"``; never imported by ``import earth_embed`` (the engine registry in
:mod:`earth_embed.tiling.engine` imports it when ``engine="ray"`` is asked for).

- The units become a Ray Dataset; :func:`~earth_embed.tiling.unit.read_unit` runs in CPU tasks
  (reading and resampling the windows, no model), streamed so only a few units are in flight.
- ``options.workers`` actors (:class:`_UnitWriter`) each build the model once with ``model_factory``, in their
  constructor (on a GPU when the cluster has one: ``num_gpus=1`` per actor), compute each unit with
  :func:`~earth_embed.tiling.unit.compute_unit` and write it to the sink themselves, whole and by
  unit (the store is picklable; actors reopen it by path), so no unit's data goes back to the driver.
- ``options.address`` joins an existing cluster (``HEAD:6379`` or ``auto`` from a node of the cluster; Ray Client ``ray://`` is refused, Ray Data does not run over it); otherwise a
  local Ray is started for the run and stopped after it, unless one is already running in this process.
  Either way :func:`~earth_embed.tiling.ray_connect.ray_session` checks the cluster first and fails in
  seconds with a clear message (``earth_embed.pipeline.region`` enters it before the store is touched).

Each unit reports its own clock, so the summary's ``unit_seconds`` (first unit's compute start to last unit
written, across actors) and ``model_load_seconds`` (the slowest actor's load) keep start-up out of throughput.
The codes equal the local engine's up to float rounding of a different thread count (+-1 code).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..allocator import keep_freed_memory
from ..errors import RasterInputError
from .engine import RunOptions, RunSummary, UnitSink, model_on, pick_device
from .plan import RegionPlan, WorkUnit


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RasterInputError(
            f'The ray engine needs Ray Data ({err}); install it with pip install "earth-embed[ray]".'
        ) from err
    return ray


def _read_row(row: dict[str, Any], plan: RegionPlan, units: Sequence[WorkUnit]) -> dict[str, Any]:
    """Ray Data row function (a CPU task): unit index -> pickled :class:`UnitInput` or an error message."""
    from .unit import read_unit

    unit = units[int(row["index"])]
    try:
        data = pickle.dumps(read_unit(plan, unit), protocol=pickle.HIGHEST_PROTOCOL)
        return {"index": row["index"], "input": data, "error": ""}
    except RasterInputError as err:
        return {"index": row["index"], "input": b"", "error": str(err) or repr(err)}


class _UnitWriter:
    """Ray Data actor: holds the model (built once), computes read units and writes them to the sink."""

    def __init__(self, model_factory: Callable[[], Any], sink: UnitSink, options: RunOptions, threads: int) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.device = pick_device(options.device)
        self.options = options
        self.sink = sink
        t0 = time.perf_counter()  # the model is built once per actor, here, not per unit
        self._model_ctx = model_on(model_factory(), self.device, options.memory_format)
        self.model = self._model_ctx.__enter__()
        self._memory_ctx = keep_freed_memory()  # the actor's process is the run's: blocks reuse their pages
        self._memory_ctx.__enter__()
        self.load_seconds = time.perf_counter() - t0

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["error"]:
            return {"index": row["index"], "pixels": 0, "error": row["error"], "rss_mb": 0.0, **_NO_CLOCK}
        start = time.time()  # wall clock, comparable across the actors of one host
        inputs = pickle.loads(row["input"])
        out = self.options.compute(self.model, inputs)
        self.sink.write_unit(inputs.unit, out)
        clock = {"start": start, "end": time.time(), "load_s": self.load_seconds}
        return {"index": row["index"], "pixels": inputs.unit.pixels, "error": "", "rss_mb": _peak_rss_mb(), **clock}


_NO_CLOCK = {"start": 0.0, "end": 0.0, "load_s": 0.0}


def _peak_rss_mb() -> float:
    """This process's peak resident memory (MB; 0 where the platform cannot tell)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _resources(ray: Any, workers: int) -> tuple[float, float, int]:
    """(CPUs per actor, GPUs per actor, torch threads per actor) for ``workers`` actors on this cluster.

    Half a CPU per read task stays free, so reads and model actors never wait for each other.
    """
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 1)), float(total.get("GPU", 0))
    if gpus >= workers:
        return 1.0, 1.0, 0
    per_actor = max(0.25, (cpus - 0.5) / workers)
    return per_actor, 0.0, max(1, round(per_actor))


def run_ray(
    plan: RegionPlan,
    units: Sequence[WorkUnit],
    model_factory: Callable[[], Any],
    sink: UnitSink,
    options: RunOptions,
) -> RunSummary:
    """Run ``units`` on Ray (see :mod:`earth_embed.tiling.engine` for the contract)."""
    from tqdm.auto import tqdm

    from .ray_connect import ray_session

    _ray()
    summary = RunSummary()
    t0 = time.perf_counter()
    with ray_session(options.address, options.timeout, options.runtime_env) as ray:
        workers = max(1, int(options.workers or 1))
        cpus, gpus, threads = _resources(ray, workers)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"index": i} for i in range(len(units))], override_num_blocks=max(1, len(units)))
        env = {"runtime_env": options.runtime_env} if options.runtime_env else {}
        ds = ds.map(_read_row, fn_kwargs={"plan": plan, "units": list(units)}, num_cpus=0.5, **env)
        ds = ds.map(
            _UnitWriter,
            fn_constructor_args=(model_factory, sink, options, threads),
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus,
            num_gpus=gpus,
            **env,
        )
        bar = tqdm(total=len(units), desc=options.desc, unit="unit", disable=not options.progress, dynamic_ncols=True)
        starts, ends = [], []
        try:
            for row in ds.iter_rows():
                unit = units[int(row["index"])]
                if row["error"]:
                    if options.on_error == "stop":
                        raise RasterInputError(row["error"])
                    summary.failed.append((unit.key, row["error"]))
                else:
                    summary.done += 1
                    summary.pixels += int(row["pixels"])
                    summary.worker_peak_rss_mb = max(summary.worker_peak_rss_mb, float(row["rss_mb"]))
                    summary.model_load_seconds = max(summary.model_load_seconds, float(row["load_s"]))
                    starts.append(float(row["start"]))
                    ends.append(float(row["end"]))
                bar.update(1)
        finally:
            bar.close()
        summary.unit_seconds = max(ends) - min(starts) if starts else 0.0
    summary.seconds = time.perf_counter() - t0
    return summary
