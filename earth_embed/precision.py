"""Compute precision as a run option: which precision a request means on a device, and its autocast.

``auto`` is bf16 on CPUs with native bf16 (AVX512-BF16 or AMX: x86 only, measured; other CPUs fp32), on
CUDA GPUs bf16 where native (compute capability >= 8.0) else fp16, and fp32 on every other device.
Explicit requests that the device cannot honour:

* ``bf16`` on a CPU or GPU without native bf16: a :class:`~earth_embed.errors.PrecisionWarning` and fp32
  (torch would emulate bf16 there, slower than fp32, so the run keeps fp32's exact numbers instead);
* ``fp16`` on a CPU: a :class:`~earth_embed.errors.PrecisionError` (use bf16 or fp32);
* ``bf16`` or ``fp16`` on any device but a CPU or a CUDA GPU (mps, xpu...): a PrecisionError (use fp32).

Reduced precision is autocast (weights stay float32; convolutions and matmuls run in bf16/fp16); the
texture layer (:mod:`earth_embed.local_stats`) keeps its variance in float32 inside autocast.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any

import torch

from .errors import PrecisionError, PrecisionWarning

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: What runs use when no precision is asked for (``earth-embed embed``, ``embed-region``, the Python verbs).
#: fp32: bf16 keeps the frozen probe within 0.12 mIoU on the three labelled sets but only 98.2 % of int8 codes
#: within +-1 of fp32's on brandenburg-osm, short of the 99 % rule (docs/results/precision_probe.json), so
#: reduced precision is asked for (``auto``, ``bf16``), never the default.
DEFAULT_PRECISION = "fp32"
#: The torch dtype of each resolved precision.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_AUTO = (
    "auto: bf16 on CPUs with AVX512-BF16 or AMX and on CUDA GPUs of compute capability >= 8.0, fp16 on "
    "older CUDA GPUs, fp32 elsewhere"
)


@functools.cache
def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16), as torch detects it."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # public in recent torch (cpuinfo flags)
    if capabilities is not None:
        caps = capabilities()
        return bool(caps.get("avx512_bf16", False) or caps.get("amx_bf16", False))
    cpu: Any = torch._C._cpu  # older torch: the same cpuinfo flags, private
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name)()) for name in probes if hasattr(cpu, name))


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA (or ROCm) GPU ``device`` computes bf16 natively."""
    if torch.version.hip:
        return bool(torch.cuda.is_bf16_supported())
    return torch.cuda.get_device_capability(device)[0] >= 8


def check_precision(requested: str) -> str:
    """``requested`` normalised (case, spaces) if it is one of :data:`PRECISIONS`, else a PrecisionError."""
    name = requested.strip().lower() if isinstance(requested, str) else requested
    if name not in PRECISIONS:
        raise PrecisionError(f"unknown precision {requested!r}: choose one of {', '.join(PRECISIONS)} ({_AUTO}).")
    return name


def choose_precision(requested: str, device_type: str, native_bf16: bool) -> str:
    """The precision run for ``requested`` on a device of ``device_type`` ('cpu', 'cuda', ...) that has
    (or lacks) native bf16: 'fp32', 'bf16' or 'fp16'. The rules are the module docstring's."""
    name = check_precision(requested)
    if name == "fp32":
        return "fp32"
    if device_type not in ("cpu", "cuda"):
        if name == "auto":
            return "fp32"
        raise PrecisionError(
            f"precision {name} runs on CPUs and CUDA GPUs only, not on a {device_type} device: use fp32 (or auto)."
        )
    if name == "fp16" and device_type == "cpu":
        raise PrecisionError(
            "precision fp16 runs on CUDA GPUs only: on a CPU use bf16 (fast on CPUs with AVX512-BF16 or AMX) or fp32."
        )
    if name == "auto":
        return "bf16" if native_bf16 else ("fp16" if device_type == "cuda" else "fp32")
    if name == "bf16" and not native_bf16:
        what = "this CPU has neither AVX512-BF16 nor AMX" if device_type == "cpu" else "this GPU is older than sm80"
        fix = "fp32 or auto" if device_type == "cpu" else "fp16 (or auto) for this GPU's fast precision"
        warnings.warn(
            f"precision bf16 asked, but {what}, so bf16 would be emulated (slower than fp32): running fp32. "
            f"Ask for {fix} to silence this warning.",
            PrecisionWarning,
            stacklevel=3,
        )
        return "fp32"
    return name


def resolve_precision(requested: str, device: torch.device | str | None = None) -> str:
    """The precision run for ``requested`` (one of :data:`PRECISIONS`) on ``device`` (default: the CPU)."""
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cpu":
        native = cpu_native_bf16()
    elif dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PrecisionError(
                f"device {dev} asked, but torch sees no CUDA GPU (torch.cuda.is_available() is False): run on "
                "the CPU, or install a CUDA build of torch on a machine with a GPU."
            )
        native = cuda_native_bf16(dev)
    else:
        native = False
    return choose_precision(requested, dev.type, native)


def autocast_for(
    precision: str, device: torch.device | str | None = None
) -> torch.autocast | contextlib.nullcontext[None]:
    """The context to run a model in at ``precision`` on ``device``: :func:`torch.autocast` to bf16 or
    fp16, or a null context for fp32. ``precision`` may be any of :data:`PRECISIONS` (resolved with
    :func:`resolve_precision`, so a request the device cannot honour warns or raises as there).

    ``autocast_for("auto", device)`` on a CUDA device is what the region unit's ``_autocast`` did (bf16
    where supported, else fp16); on a CPU, ``_autocast`` ran fp32 (``autocast_for("fp32")``).
    """
    dev = torch.device(device if device is not None else "cpu")
    used = resolve_precision(precision, dev)
    if used == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=DTYPES[used])
