"""The local engine: in-process, a reader thread, the model in the calling thread, a writer thread.

The reader prefetches (and resamples) the next unit's windows while the model computes; the writer
compresses and writes finished units. Single-slot queues bound memory to about three units.
No dependency beyond the core install.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import RasterInputError
from .engine import RunOptions, RunSummary, UnitSink, model_on, pick_device
from .plan import RegionPlan, WorkUnit
from .unit import SceneCache, read_unit

_STOP = object()


class _Worker(threading.Thread):
    """A daemon thread that runs ``fn`` and keeps its exception for the caller."""

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as err:  # handed to the main thread
            self.error = err


def _put(q: queue.Queue, item: Any, stop: threading.Event, consumer: threading.Thread | None = None) -> bool:
    """Put ``item`` unless ``stop`` is set or the ``consumer`` thread has died (then False)."""
    while not stop.is_set() and (consumer is None or consumer.is_alive()):
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def run_local(
    plan: RegionPlan,
    units: Sequence[WorkUnit],
    model_factory: Callable[[], Any],
    sink: UnitSink,
    options: RunOptions,
) -> RunSummary:
    """Run ``units`` in this process (see :mod:`earth_embed.tiling.engine` for the contract)."""
    from tqdm.auto import tqdm

    device = pick_device(options.device)
    summary = RunSummary()
    stop = threading.Event()
    read_q: queue.Queue = queue.Queue(maxsize=1)
    write_q: queue.Queue = queue.Queue(maxsize=1)

    def read_all() -> None:
        with SceneCache(plan) as scenes:
            for unit in units:
                try:
                    item: Any = read_unit(plan, unit, scenes)
                except RasterInputError as err:
                    if options.on_error == "stop":
                        raise
                    item = (unit, err)
                if not _put(read_q, item, stop):
                    return
        _put(read_q, _STOP, stop)

    def write_all() -> None:
        while True:
            item = write_q.get()
            if item is _STOP:
                return
            sink.write_unit(*item)

    reader, writer = _Worker(read_all, "earth-embed-reader"), _Worker(write_all, "earth-embed-writer")
    bar = tqdm(total=len(units), desc=options.desc, unit="unit", disable=not options.progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    first: float | None = None  # the first unit's compute start (the units' clock)
    loaded = model_factory()
    summary.model_load_seconds = time.perf_counter() - t0
    with model_on(loaded, device, options.memory_format) as model:
        reader.start()
        writer.start()
        try:
            while True:
                try:
                    item = read_q.get(timeout=0.5)
                except queue.Empty:
                    if reader.error is not None:
                        raise reader.error from None
                    continue
                if item is _STOP:
                    break
                if writer.error is not None:
                    raise writer.error
                if isinstance(item, tuple):  # (unit, error): a bad scene, skipped by request
                    summary.failed.append((item[0].key, str(item[1])))
                    bar.update(1)
                    continue
                first = time.perf_counter() if first is None else first
                data = options.compute(model, item)
                if not _put(write_q, (item.unit, data), stop, writer):
                    raise writer.error or RuntimeError("writer stopped")
                summary.done += 1
                summary.pixels += item.unit.pixels
                bar.update(1)
            _put(write_q, _STOP, stop, writer)
            writer.join()
            if writer.error is not None:
                raise writer.error
            if first is not None:
                summary.unit_seconds = time.perf_counter() - first
        finally:
            stop.set()
            bar.close()
            reader.join()  # it checks `stop` between units; the scenes must outlive it
            if writer.is_alive():  # drop what is queued, then let the writer finish its current unit
                with contextlib.suppress(queue.Empty):
                    while True:
                        write_q.get_nowait()
                write_q.put(_STOP)
                writer.join()
    summary.seconds = time.perf_counter() - t0
    return summary
