"""Issue 33: the default cloud-mask buffer of ``earth-embed change`` (rules in ``docs/results/change_cloud_buffer.md``,
written before the run).

For each buffer (px of the 10 m grid, the unit of ``--mask-buffer``):

1. **Cloud reference** ``clouds/ukis-csmask-s2``: ukis-csmask (6 bands, what ``--mask auto`` runs) on the reference's
   own pixels (~30 m, the pipeline's library resolution), its classes and the labels repeated 3 x 3 onto the 10 m
   grid as ``LibraryMask`` does, the mask grown there by the pipeline's ``dilate``: the share of reference
   cloud + shadow left unmasked (leak) and of clear pixels masked (cost). Also on the reference's own pixels
   (sensitivity: as if it were a 10 m scene).
2. **Paris** (OSCD, both dates, labels): ``change`` with its defaults and that ``mask_buffer``: masked share, the
   highest valid scores and whether they lie on a rim (within 3 px of the run's masked area), changed share, recall,
   precision. Diagnostics (added after the first run, see the write-up): each date's DN at the top pixel, its
   distance to each date's buffer-0 mask, the highest score within 20 px of the later date's buffer-0 mask (its
   clouds) and its rank, the share of the marked pixels within 20 px of each date's buffer-0 mask.

Usage: ``OMP_NUM_THREADS=1 python training/experiments/change_cloud_buffer.py --data-root ../shared/data``
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from scipy.ndimage import distance_transform_cdt

from earth_embed.apps.change import change
from earth_embed.inputs.masks import library
from earth_embed.inputs.masks.grid import dilate
from earth_embed.released import find_released
from training.evaluation.results_file import command_line, write_results

BUFFERS = (0, 5, 10, 20)
REF_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
#: Reach of the default score's context (5 x 5 box: 2 px, 3 x 3 smoothing: 1 px): a rim pixel is this close to the mask.
RIM_PX = 3
#: The top of the ranking: this many highest valid scores.
TOP_N = 20
CITY = "paris"
#: Pixels this close to a date's buffer-0 mask are "near" what the library masked there (diagnostics).
NEAR_PX = 20
DN_BANDS = ("B02", "B03", "B04", "B08")


def reference_section(data: Path, buffers: tuple[int, ...]) -> dict[str, Any]:
    """Leak and cost of each buffer on the cloud reference, on the 10 m grid (factor 3) and on its own pixels."""
    d = data / "clouds" / "ukis-csmask-s2"
    img = np.stack([rasterio.open(d / f"{b}.tif").read(1) for b in REF_BANDS], axis=-1).astype(np.float32)
    ref = rasterio.open(d / "mask.tif").read(1)
    found = library.classify(img, "L1C") > 0
    out: dict[str, Any] = {}
    for grid, f in (("10m_grid", library.FACTOR), ("own_pixels", 1)):
        m, r = found.repeat(f, 0).repeat(f, 1), ref.repeat(f, 0).repeat(f, 1)
        cloud, shadow, clear = r == 1, r == 2, r == 0
        rows = {}
        for b in buffers:
            g = dilate(m, b)
            rows[str(b)] = {
                "leak_cloud_shadow": float((~g[cloud | shadow]).mean()),
                "leak_cloud": float((~g[cloud]).mean()),
                "leak_shadow": float((~g[shadow]).mean()),
                "cost_clear_masked": float(g[clear].mean()),
            }
            print(f"reference {grid} buffer {b}: {rows[str(b)]}", flush=True)
        out[grid] = rows
    out["shape"] = list(ref.shape)
    return out


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _masked_share(path: Path) -> float | None:
    with rasterio.open(path) as ds:
        v = ds.tags().get("MASKED_SHARE")
    return None if v is None else float(v)


def _nodata(path: Path) -> np.ndarray:
    return ~np.isfinite(_read(path).astype(np.float32))


def _diagnostics(data: Path, score: np.ndarray, marked: np.ndarray, labels: np.ndarray, first: dict) -> dict:
    """Where the top pixel and the marked pixels lie against each date's buffer-0 mask; DN at the top pixel."""
    valid = np.isfinite(score)
    r, c = np.unravel_index(int(np.argmax(np.where(valid, score, -np.inf))), score.shape)
    out: dict[str, Any] = {"top_labelled_change": bool(labels[r, c])}
    for side, folder in (("a", "oscd-date1"), ("b", "oscd")):
        dist = distance_transform_cdt(~first[side], metric="chessboard")
        near = dist <= NEAR_PX
        out[f"top_px_from_buffer0_mask_{side}"] = int(dist[r, c])
        out[f"marked_near_buffer0_mask_{side}_share"] = float((marked & near).sum() / max(1, marked.sum()))
        out[f"top_dn_{side}"] = {
            b: int(_read(data / "unlabelled" / folder / CITY / f"{b}.tif")[r, c]) for b in DN_BANDS
        }
        cand = np.where(valid & near, score, -np.inf)
        if np.isfinite(cand).any():
            i = np.unravel_index(int(np.argmax(cand)), score.shape)
            out[f"best_near_buffer0_mask_{side}"] = {
                "score": float(score[i]), "row_col": [int(i[0]), int(i[1])], "px_from_mask": int(dist[i]),
                "rank": int((score[valid] > score[i]).sum()) + 1, "labelled_change": bool(labels[i]),
            }  # fmt: skip
    return out


def paris_run(data: Path, buffer: int, work: Path, first_masked: dict | None) -> tuple[dict[str, Any], Any]:
    """``change`` on Paris with ``mask_buffer=buffer``, and what the rules measure of it (``first_masked``: each
    date's masked pixels in the first run, buffer 0; None in that run)."""
    a, b = data / "unlabelled" / "oscd-date1" / CITY, data / "unlabelled" / "oscd" / CITY
    out = work / f"{CITY}-buffer{buffer}"
    t0, c0 = time.perf_counter(), time.process_time()
    res = change(a, b, out, mask_buffer=buffer, progress=False, png=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    score, mask = _read(res.score), _read(res.mask)
    labels = _read(data / "labelled" / "oscd-change" / CITY / "change.tif") == 1
    assert labels.shape == score.shape, (labels.shape, score.shape)
    valid = np.isfinite(score)
    masked = ~valid
    rim = valid & dilate(masked, RIM_PX)
    dist = distance_transform_cdt(~masked, metric="chessboard") if masked.any() else None
    emb = res.embeddings or (None, None)
    assert emb[0] is not None and emb[1] is not None
    first = first_masked or {"a": _nodata(emb[0]), "b": _nodata(emb[1])}
    both = first["a"] | first["b"]
    dist0 = distance_transform_cdt(~both, metric="chessboard") if both.any() else None
    flat = np.where(valid, score, -np.inf).ravel()
    top = np.argsort(flat)[::-1][:TOP_N]
    rows, cols = np.unravel_index(top, score.shape)
    marked = mask == 2
    hit = int((marked & labels).sum())
    r0, c0_ = int(rows[0]), int(cols[0])
    row = {
        "mask_buffer_px": buffer,
        "masked_share_a": _masked_share(emb[0]),
        "masked_share_b": _masked_share(emb[1]),
        "nodata_share": float(masked.mean()),
        "rim_share_of_valid": float(rim.sum() / max(1, valid.sum())),
        "top_score": float(score[r0, c0_]),
        "top_row_col": [r0, c0_],
        "top_on_rim": bool(rim[r0, c0_]),
        "top_px_from_mask": None if dist is None else int(dist[r0, c0_]),
        "top_px_from_buffer0_mask": None if dist0 is None else int(dist0[r0, c0_]),
        f"top{TOP_N}_on_rim": int(rim[rows, cols].sum()),
        f"top{TOP_N}_scores": [round(float(score[r, c]), 3) for r, c in zip(rows, cols)],
        "threshold": res.threshold,
        "changed_share": res.changed_pixels / max(1, res.valid_pixels),
        "marked_on_rim_share": float((marked & rim).sum() / max(1, marked.sum())),
        "recall": hit / max(1, int(labels.sum())),
        "precision": hit / max(1, int(marked.sum())),
        "labelled_change_masked": int((labels & masked).sum()),
        "diagnostics": _diagnostics(data, score, marked, labels, first),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "notes": res.notes,
    }
    print(f"diagnostics: {row['diagnostics']}", flush=True)
    print(f"paris buffer {buffer}: { {k: v for k, v in row.items() if k not in ('notes', f'top{TOP_N}_scores', 'diagnostics')} }",
          flush=True)  # fmt: skip
    return row, first


def markdown(result: dict[str, Any]) -> str:
    ref, paris = result["reference"], result["paris"]
    lines = [
        "| buffer (px of 10 m) | ref. leak (cloud+shadow unmasked) | ref. cost (clear masked) | own-pixel leak / cost | "
        f"Paris masked | top score | top on rim | top {TOP_N} on rim | changed | recall | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in result["buffers"]:
        r, o, p = ref["10m_grid"][str(b)], ref["own_pixels"][str(b)], paris[str(b)]
        lines.append(
            f"| {b} | {100 * r['leak_cloud_shadow']:.1f} % | {100 * r['cost_clear_masked']:.1f} % | "
            f"{100 * o['leak_cloud_shadow']:.1f} % / {100 * o['cost_clear_masked']:.1f} % | "
            f"{100 * p['nodata_share']:.2f} % | {p['top_score']:.1f} ({p['top_px_from_mask']} px from the mask) | "
            f"{'yes' if p['top_on_rim'] else 'no'} | {p[f'top{TOP_N}_on_rim']} | {100 * p['changed_share']:.2f} % | "
            f"{100 * p['recall']:.1f} % | {100 * p['precision']:.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--buffers", type=int, nargs="+", default=list(BUFFERS))
    p.add_argument("--json", default="docs/results/change_cloud_buffer.json")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data, buffers = Path(args.data_root), tuple(sorted(args.buffers))
    result: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "command": command_line("training/experiments/change_cloud_buffer.py", list(sys.argv[1:] if argv is None else argv)),
        "encoder": find_released("encoder"),
        "buffers": list(buffers),
        "rim_px": RIM_PX,
        "top_n": TOP_N,
        "reference": reference_section(data, buffers),
        "paris": {},
    }  # fmt: skip
    first = None
    with tempfile.TemporaryDirectory(prefix="change-cloud-buffer-") as tmp:
        for b in buffers:
            result["paris"][str(b)], first = paris_run(data, b, Path(tmp), first)
    result["markdown"] = markdown(result)
    return write_results(args.json, result)


if __name__ == "__main__":
    main()
