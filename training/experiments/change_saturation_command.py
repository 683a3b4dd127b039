"""Paris through ``earth_embed.apps.change.change`` with every default, three ways: saturation decided on the resampled
values with no buffer (the code before ``change_saturation.md``), carried through the resampling with no buffer, and
carried with the shipped buffer. A check of ``change_saturation.md``'s outcome on the command itself (its cloud mask,
tiling and minimum area included); not judged by its rule.

    OMP_NUM_THREADS=1 python training/experiments/change_saturation_command.py --data-root ../shared/data

The two earlier behaviours are set by replacing ``inputs.scene.drawn_on`` (no carry) and ``SATURATION_BUFFER`` for the
run. Writes ``--json``: per variant the valid pixels, the marked share, the default mask's change F1 over the city
(a labelled change pixel that is invalid counts as missed), and the 1000 and 20 highest scores of ``score.tif``:
false positives, precision, and how many lie within 10 px of date A's saturated object (row 8, column 216); the
score threshold and the share of pixels above the change-level floor (from the report).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np
import rasterio
import torch

import earth_embed.inputs.scene as scene_module
from earth_embed.apps.change import change
from training.evaluation.results_file import RunClock, write_results

OBJECT, NEAR_PX, TOP = (8, 216), 10, 1000


def _no_carry(ds: Any, index: int, grid: Any, window: Any, bad: Any) -> np.ndarray:
    return np.zeros((int(window.height), int(window.width)), bool)


def one_run(a: Path, b: Path, y: np.ndarray, out: Path) -> dict[str, Any]:
    """The figures of one ``change`` run with the defaults into ``out``."""
    change(a, b, out, progress=False, png=False, overwrite=True)
    with rasterio.open(out / "score.tif") as ds:
        s = ds.read(1)
    with rasterio.open(out / "mask.tif") as ds:
        m = ds.read(1) == 2
    rep = json.loads((out / "change_report.json").read_text())
    order = np.argsort(-np.where(np.isfinite(s), s, -np.inf), axis=None)
    rr, cc = np.unravel_index(order, s.shape)
    near = (abs(rr - OBJECT[0]) <= NEAR_PX) & (abs(cc - OBJECT[1]) <= NEAR_PX)
    top = y.ravel()[order[:TOP]]
    tp = float((m & (y == 1)).sum())
    return {
        "valid_pixels": rep["valid_pixels"], "changed_pct": 100 * rep["changed_pixels"] / rep["valid_pixels"],
        "mask_f1": 2 * tp / max(1.0, float(m.sum() + (y == 1).sum())),
        "top_false_positives": int((top == 0).sum()), "top_precision_pct": 100 * float(top.mean()),
        "top_near_object": int(near[:TOP].sum()), "top20_near_object": int(near[:20].sum()),
        "top_score": float(s.ravel()[order[0]]), "top_at": [int(rr[0]), int(cc[0])],
        "threshold": rep["threshold"], "level_above_floor_share": rep["level_above_floor_share"],
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    clock = RunClock()
    root = Path(args.data_root)
    a, b = root / "unlabelled" / "oscd-date1" / "paris", root / "unlabelled" / "oscd" / "paris"
    with rasterio.open(root / "labelled" / "oscd-change" / "paris" / "change.tif") as ds:
        y = ds.read(1)
    shipped, drawn_on = scene_module.SATURATION_BUFFER, scene_module.drawn_on
    variants = {"resampled values, buffer 0": (False, 0), "carried, buffer 0": (True, 0),
                f"carried, buffer {shipped}": (True, shipped)}  # fmt: skip
    table = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for k, (name, (carry, buffer)) in enumerate(variants.items()):
                setattr(scene_module, "drawn_on", drawn_on if carry else _no_carry)  # noqa: B010 (another signature)
                scene_module.SATURATION_BUFFER = buffer
                table[name] = one_run(a, b, y, Path(tmp) / str(k))
                print(name, table[name], flush=True)
    finally:
        setattr(scene_module, "drawn_on", drawn_on)  # noqa: B010
        scene_module.SATURATION_BUFFER = shipped
    lines = ["| variant | valid px | score threshold | above the level floor | marked | mask F1 | top-1000 precision | "
             "top 1000 / top 20 near the object |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in table.items():
        lines.append(f"| {name} | {r['valid_pixels']} | {r['threshold']:.2f} | {100 * r['level_above_floor_share']:.2f} % | "
                     f"{r['changed_pct']:.2f} % | {100 * r['mask_f1']:.1f} | "
                     f"{r['top_precision_pct']:.1f} % | {r['top_near_object']} / {r['top20_near_object']} |")  # fmt: skip
    result = {"city": "paris", "table": table, **clock.meta(1, "training/experiments/change_saturation_command.py",
                                                             args.argv)}  # fmt: skip
    result["markdown"] = "\n".join(lines)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--json", default="docs/results/change_saturation_command.json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return write_results(args.json, run(args))


if __name__ == "__main__":
    main()
