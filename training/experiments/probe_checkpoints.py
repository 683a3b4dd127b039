"""Probe every saved checkpoint of a pre-training run: the curve behind probe-based model selection.

    python training/experiments/probe_checkpoints.py --run runs/release --out runs/release/probe_curve.json
    python training/experiments/probe_checkpoints.py --run runs/arm-a --key --split cv --fast   # as train.select: probe_cv

For each ``<run>/checkpoints/step_*`` the encoder is rebuilt from the run's ``config.yaml`` and the
checkpoint weights (the query encoder, and with ``--key`` also the EMA key encoder) and probed with
its stored BatchNorm statistics and with AdaBN (statistics re-estimated on unlabelled windows; no
labels), beside the hand-made references (raw bands, hand-made stack; ``training.evaluation.features``) and,
with ``--references``, random-init twins. brandenburg-osm is scored as model selection may use it
(the test block is never read): ``--split val`` fits on the training block and scores the validation
block (AdaBN windows from the training block); ``--split cv`` is the 3-fold spatial cross-validation
inside the training block (``training.evaluation.probe.ProbeSelector``). The other labelled sets are scored,
for information, by their west -> east halves (``linear_probe.py``). One row per (step, encoder, BN
mode); reruns reuse rows already in ``--out``. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch
import yaml

from earth_embed import EarthEncoder
from training.data.checkpoints import encoder_from_checkpoint
from training.evaluation.features import BN_MODES
from training.evaluation.probe import (
    DATASETS,
    FAST_MAX_TRAIN,
    REFERENCES,
    ProbeSelector,
    halves,
    probe_source,
    scene_arrays,
)


class SetScorer:
    """mIoU of a feature source on one labelled set, with the split that set gets in this table."""

    def __init__(self, data_root: Path, name: str, bands: list[str], split: str, max_train: int | None) -> None:
        folder = data_root / "labelled" / name
        self.name = name
        if name == "brandenburg-osm":
            self.selector: ProbeSelector | None = ProbeSelector(
                folder, bands, None, max_train=max_train or 10**9, method=split
            )
        else:
            self.selector = None
            self.refl, self.y, self.scene = scene_arrays(folder, bands)
            self.fit, self.score_mask = halves(self.scene, name)
            self.max_train = max_train

    def __call__(self, source: EarthEncoder | str, mean: list[float], std: list[float], bn: str) -> float:
        if self.selector is not None:
            return self.selector.score(source, mean, std, bn)
        m = probe_source(
            source, self.refl, self.y, self.fit, self.score_mask, self.scene.classes, mean, std, bn=bn,
            max_train=self.max_train,
        )  # fmt: skip
        return float(m["miou"])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="pre-training run folder (config.yaml + checkpoints/)")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--sets", "--datasets", dest="sets", nargs="+", default=list(DATASETS))
    p.add_argument("--split", choices=("val", "cv"), default="val", help="brandenburg-osm: val block or 3-fold CV")
    p.add_argument("--key", action="store_true", help="also probe the EMA key encoder of each checkpoint")
    p.add_argument("--bn", nargs="+", default=list(BN_MODES), choices=BN_MODES)
    p.add_argument("--references", action="store_true", help="also probe the architecture at random init (seed 0)")
    p.add_argument("--max-train", type=int, default=20000, help="probe training pixels per fit (subsampled)")
    p.add_argument("--fast", action="store_true", help=f"--max-train {FAST_MAX_TRAIN // 2}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", "--json", dest="out", help="JSON output (default <run>/probe_curve.json)")
    args = p.parse_args(argv)
    if args.fast:
        args.max_train = FAST_MAX_TRAIN // 2
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    if not ckpts:
        raise SystemExit(f"{run}/checkpoints has no step_* folders; pre-train with train.save_every > 0")
    bands, norm = cfg["data"]["bands"], cfg["model"]["normalization"]
    scorers = [SetScorer(Path(args.data_root), n, bands, args.split, args.max_train) for n in args.sets]
    # (step, encoder label, bn or None, source): source is a checkpoint folder, "random" or a hand-made name
    candidates: list[tuple[int, str, str | None, Path | str]] = [(0, r, None, r) for r in REFERENCES]
    if args.references:
        candidates += [(0, "random init", bn, "random") for bn in args.bn]
    for ckpt_dir in ckpts:
        step = int(ckpt_dir.name.split("_")[1])
        for which in ("query", "key") if args.key else ("query",):
            candidates += [(step, which, bn, ckpt_dir) for bn in args.bn]
    out = Path(args.out) if args.out else run / "probe_curve.json"
    old = json.loads(out.read_text()) if out.is_file() else {}
    reuse = old.get("split") == args.split and old.get("max_train") == args.max_train
    done = {(r["step"], r["encoder"], r.get("bn")): r for r in old.get("rows", []) if reuse}
    done = {k: r for k, r in done.items() if all(n in r for n in args.sets)}
    rows = []
    for step, label, bn, src in candidates:
        if (step, label, bn) in done:
            rows.append(done[(step, label, bn)])
            continue
        if isinstance(src, Path):
            source: EarthEncoder | str = encoder_from_checkpoint(cfg, src, label)
        elif src == "random":
            torch.manual_seed(0)
            source = encoder_from_checkpoint(cfg, None)
        else:
            source = src
        row: dict[str, Any] = {"step": step, "encoder": label, "bn": bn}
        for sc in scorers:
            row[sc.name] = round(100 * sc(source, norm["mean"], norm["std"], bn or "stored"), 2)
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        split = {"val": "train->val block", "cv": "3-fold spatial CV inside the training block"}[args.split]
        out.write_text(
            json.dumps(
                {
                    "run": str(run),
                    "split": args.split,
                    "max_train": args.max_train,
                    "description": f"brandenburg-osm: {split}; others: west->east half",
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )
    return rows


if __name__ == "__main__":
    main()
