"""Do an encoder's stored BatchNorm statistics fit the data it was trained on, and the target scene? (issue 10, cause 4)

    python training/experiments/corpus_batchnorm.py --encoder models/earth-embed-s2-unet-r18s16 \\
        --json docs/results/corpus_batchnorm.json

For each ``--encoder`` it re-estimates every BatchNorm's running statistics twice, with no labels:

* ``corpus``: precise BN (the average of batch statistics, Wu & Johnson 2021) over ``--windows`` clean windows of
  ``--size`` px drawn from the pre-training data config exactly as pre-training draws them (items disjoint from
  training), normalised with the encoder's own statistics: what the stored statistics would be without training's
  moving average and augmentations;
* ``target``: AdaBN on brandenburg-osm's training block (the windows the cross-validated selection probe may read).

It prints, per estimate, how far the statistics move from the stored ones (the median over channels of
variance ratio and of the mean shift in stored standard deviations, for the first BatchNorm and over all of them)
and the 3-fold cross-validated probe inside brandenburg-osm's training block (``ProbeSelector(method="cv")``, the
selection split; no test block is read) with each set of statistics. ``--save`` writes the corpus-re-estimated
encoder of the first ``--encoder``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np
import torch

from earth_embed import EarthEncoder
from training.data.checkpoints import save_pretrained_atomic
from training.data.unlabelled import UnlabelledWindows, load_data_config
from training.evaluation.features import adapt_batchnorm, normalise_scene, reestimate_batchnorm
from training.evaluation.probe import ProbeSelector
from training.evaluation.results_file import command_line, write_report

REPO = Path(__file__).resolve().parent.parent.parent
WINDOW_START = 3 * 10**9  # pre-training items 0..steps*batch are training windows; these are never drawn there


def corpus_batches(enc: EarthEncoder, ds: UnlabelledWindows, windows: int, batch: int) -> Iterator[torch.Tensor]:
    """Normalised (B, C, S, S) batches of ``windows`` windows of ``ds`` (nodata pixels at 0 reflectance, as in training)."""
    n = enc.config.normalization
    mean, std = torch.tensor(n.mean)[:, None, None], torch.tensor(n.std)[:, None, None]
    for i0 in range(0, windows, batch):
        items = range(WINDOW_START + i0, WINDOW_START + min(i0 + batch, windows))
        yield torch.stack([(torch.from_numpy(ds.read_window(i)[0]) - mean) / std for i in items])


def _running(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    mean, var = getattr(m, "running_mean", None), getattr(m, "running_var", None)
    if mean is None or var is None:
        raise ValueError(f"{m} keeps no running statistics (track_running_stats=False)")
    return mean, var


def drift(stored: EarthEncoder, other: EarthEncoder) -> dict[str, float]:
    """How far ``other``'s BatchNorm statistics are from ``stored``'s: medians over channels, first layer and all."""
    bn = torch.nn.modules.batchnorm._BatchNorm
    pairs = [(_running(a), _running(b)) for a, b in zip(stored.modules(), other.modules()) if isinstance(a, bn)]
    ratio = [float((vb / va).median()) for (_, va), (_, vb) in pairs]
    shift = [float(((mb - ma) / va.sqrt()).abs().median()) for (ma, va), (mb, _) in pairs]
    return {
        "first_var_ratio": ratio[0],
        "first_mean_shift": shift[0],
        "median_var_ratio": float(np.median(ratio)),
        "median_abs_log2_var_ratio": float(np.median(np.abs(np.log2(ratio)))),
        "median_mean_shift": float(np.median(shift)),
        "layers": len(pairs),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    sources = Path(args.sources) if Path(args.sources).is_file() else REPO / args.sources
    data = load_data_config(sources, args.data_root)
    rows = []
    selector: ProbeSelector | None = None
    windows: dict[tuple[str, ...], UnlabelledWindows] = {}  # opened (every scene checked) once per band list
    for k, path in enumerate(args.encoder):
        enc = EarthEncoder.from_pretrained(path).eval()
        n = enc.config.normalization
        if selector is None:
            folder = Path(args.data_root) / "labelled" / "brandenburg-osm"
            selector = ProbeSelector(folder, enc.bands, None, method="cv", bn_modes=("stored",))
        bands = tuple(enc.bands)
        if bands not in windows:
            windows[bands] = UnlabelledWindows(data.scenes, bands, args.size, length=1, seed=args.seed)
        ds = windows[bands]
        corpus = reestimate_batchnorm(enc, corpus_batches(enc, ds, args.windows, args.batch))
        target = adapt_batchnorm(enc, normalise_scene(selector.refl, n.mean, n.std))
        if k == 0 and args.save:
            save_pretrained_atomic(corpus, Path(args.save))
        for name, e in (("stored", enc), ("corpus", corpus), ("target", target)):
            row = {"encoder": path, "statistics": name, "cv_probe": selector.score(e, n.mean, n.std, "stored")}
            row |= drift(enc, e)
            rows.append(row)
            print(
                f"{path} {name}: cv probe {100 * row['cv_probe']:.2f}, first BN var ratio {row['first_var_ratio']:.2f}"
            )
    return {
        "rows": rows,
        "windows": args.windows,
        "size": args.size,
        "sources": args.sources,
        "date": _dt.date.today().isoformat(),
        "command": command_line("training/experiments/corpus_batchnorm.py", args.argv),
    }


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per (encoder, statistics)."""
    out = [
        "| encoder | BN statistics | CV probe (%) | first BN: var ratio / mean shift | all BN: median var ratio / "
        "median abs log2 ratio / median mean shift |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        out.append(
            f"| `{r['encoder']}` | {r['statistics']} | {100 * r['cv_probe']:.2f} | {r['first_var_ratio']:.2f} / "
            f"{r['first_mean_shift']:.2f} | {r['median_var_ratio']:.2f} / {r['median_abs_log2_var_ratio']:.2f} / "
            f"{r['median_mean_shift']:.2f} |"
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", action="append", required=True, help="encoder folder (repeatable)")
    p.add_argument("--sources", default="training/configs/data/pretrain-real.yaml", help="pre-training data config")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--windows", type=int, default=256, help="corpus windows the statistics are averaged over")
    p.add_argument("--size", type=int, default=128, help="window side in px")
    p.add_argument("--batch", type=int, default=16, help="windows per batch (the training batch size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", help="write the first encoder with corpus-re-estimated statistics here")
    p.add_argument("--json", default="docs/results/corpus_batchnorm.json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    return write_report(args.json, run(args), table)


if __name__ == "__main__":
    main()
