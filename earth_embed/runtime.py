"""The forward's runtime as a run option: torch eager, or ONNX Runtime at fp32 or int8, with an ``auto``.

* ``torch``: the model's own forward (eager, at the run's precision; the default);
* ``onnx``: the same network exported to ONNX and run by ONNX Runtime's CPU provider at fp32
  (:mod:`earth_embed.onnx_forward`; the ``onnx`` extra);
* ``onnx-int8``: that graph with its convolutions quantised to int8 after training (static, QDQ, per-channel
  weights; calibrated on real Sentinel-2 windows), for CPUs with fast int8 dot products (AVX512-VNNI, AVX-VNNI);
* ``auto``: the fastest kept path for the device and the precision: :data:`AUTO_CPU` on a CPU where the
  precision resolves to fp32 and ONNX Runtime is installed (torch today: ONNX Runtime was not faster on a quiet
  machine), torch everywhere else (bf16 / fp16 runs, GPUs, no ``onnx`` extra).

A path is kept (may be chosen by ``auto``) only if it keeps the released encoder's frozen probe within 0.2 mIoU
on the three labelled sets and the change evaluation within 0.5 AP of torch fp32
(``training/experiments/precision_probe.py --runtimes``, ``training/experiments/change_detection.py --runtime``;
docs/results/runtime_probe.md). ONNX Runtime runs fp32 graphs only: an ``onnx`` runtime with a bf16 / fp16
precision, or on a GPU, is a :class:`~earth_embed.errors.PrecisionError`. ONNX Runtime needs about 3x torch's memory
per block (:mod:`earth_embed.onnx_forward`): on a machine short of memory, keep torch (or a smaller ``--block``).
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from .errors import MissingDependencyError, PrecisionError

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
#: What runs use when no runtime is asked for: torch (the reference every other path is measured against).
DEFAULT_RUNTIME = "torch"
#: What ``auto`` runs on a CPU at fp32 with ONNX Runtime installed: the fastest kept fp32 path on a quiet machine.
#: torch: onnx (kept by the rule: probe within 0.05 mIoU, change AP unchanged; docs/results/runtime_probe.md) ran
#: the bare forward 2.02x torch's on a 2-core VM loaded by other jobs, but 0.84x on the same kind of VM when quiet
#: (benchmarks/region_throughput.py, docs/benchmarks.md, 2026-12-07), with about 3x the memory; onnx-int8 moves a
#: probe by 0.72 mIoU: not kept.
AUTO_CPU = "torch"
#: The runtimes that keep the probe and the change evaluation (the rule above; docs/results/runtime_probe.md).
KEPT = ("torch", "onnx")
#: The ONNX runtimes and the graph each runs.
ONNX_RUNTIMES = ("onnx", "onnx-int8")
_INSTALL = "pip install 'earth-embed[onnx]'"


@functools.cache
def onnxruntime_installed() -> bool:
    """Whether ``onnxruntime`` can be imported (looked up, not imported)."""
    return importlib.util.find_spec("onnxruntime") is not None


def cpu_fast_int8() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI), as torch detects them."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        return False
    caps = capabilities()
    return bool(caps.get("avx512_vnni", False) or caps.get("avx_vnni", False))


def check_runtime(requested: str) -> str:
    """``requested`` normalised (case, spaces) if it is one of :data:`RUNTIMES`, else a PrecisionError."""
    name = requested.strip().lower() if isinstance(requested, str) else requested
    if name not in RUNTIMES:
        raise PrecisionError(
            f"unknown runtime {requested!r}: choose one of {', '.join(RUNTIMES)} (auto: the fastest kept path "
            f"measured, {AUTO_CPU} on CPUs at fp32, torch elsewhere)."
        )
    return name


def choose_runtime(requested: str, device_type: str, precision: str, installed: bool) -> str:
    """The runtime run for ``requested`` on a ``device_type`` device at the resolved ``precision`` ('fp32',
    'bf16', 'fp16') with ONNX Runtime ``installed`` or not: 'torch', 'onnx' or 'onnx-int8'."""
    name = check_runtime(requested)
    if name == "torch":
        return name
    if name == "auto":
        return AUTO_CPU if device_type == "cpu" and precision == "fp32" and installed else "torch"
    if device_type != "cpu":
        raise PrecisionError(f"runtime {name} runs on CPUs only, not on a {device_type} device: use torch (or auto).")
    if precision != "fp32":
        raise PrecisionError(
            f"runtime {name} runs the fp32 graph, not {precision}: use precision fp32 with it, or runtime torch for "
            f"{precision}."
        )
    if not installed:
        raise MissingDependencyError(f"runtime {name} needs ONNX Runtime: {_INSTALL} (or use runtime torch).")
    return name


def resolve_runtime(requested: str, device: torch.device | str | None, precision: str) -> str:
    """The runtime run for ``requested`` (one of :data:`RUNTIMES`) on ``device`` (default: the CPU) at the
    resolved ``precision``."""
    dev = torch.device(device if device is not None else "cpu")
    return choose_runtime(requested, dev.type, precision, onnxruntime_installed())
