"""Label efficiency: fine-tuning from a pre-trained encoder vs from random init, paired by seed.

    python training/experiments/label_efficiency.py --data ../shared/data/labelled/brandenburg-osm \
        --encoder models/earth-embed-s2-unet-r18s16                   # the full protocol (below)
    python training/experiments/label_efficiency.py --data ... --encoder ... --max-seeds 2 --time-budget-min 75

Protocol (issue 10): every fine-tuned start is linear-probe-then-fine-tune (``finetune.py --lp-ft``:
the 1x1 head is first fit as the standardised L-BFGS probe on the frozen encoder, then the whole net
trains with the encoder at a lower lr); its encoder lr is chosen **once per start** from ``--lr-grid``
by the validation mIoU at ``--grid-fraction``, averaged over ``--grid-seeds`` (the same budget for each
start; ``--grid-val unused-train`` scores the training chips that fraction leaves out instead of the
validation block); every run keeps its final step (fixed schedule); within a seed every start sees the same
chips and the same batch order and flips. Seeds per fraction: ``--seeds-per-fraction`` (default 10
at 1 % and 5 %, 5 at 25 % and 100 %), run seed-round by seed-round so a run cut short by
``--max-seeds`` or ``--time-budget-min`` still has balanced pairs. ``linear_probe`` = the frozen
encoder with the standardised probe (``finetune.py --freeze-encoder``). Reported: per-start mean +- std
and the paired difference pretrained - random per fraction (mean +- standard error, wins out of
seeds). Writes JSON, a markdown table and a plot; finished runs are kept in ``<work-dir>/runs.json``
and reused (same start, fraction, seed, lr and schedule); ``--reuse-runs`` seeds that cache from earlier
results files, e.g. the random-init runs of the last release (they do not depend on the encoder).

Starts (``--inits``): ``pretrained`` (the dense encoder), ``random`` (same architecture and
normalisation, fresh weights per seed), ``image_level`` (an image-level encoder), ``linear_probe``.
Without ``--encoder`` / ``--image-level-encoder`` the encoders are pre-trained first.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))


from training.evaluation.label_efficiency_report import write_markdown, write_plot
from training.evaluation.label_efficiency_stats import choose_settings, paired, summarise
from training.evaluation.results_file import write_json
from training.recipe.finetune import BATCHNORM_MODES, LABEL_UNITS, VAL_CHIPS, finetune
from training.recipe.finetune_runs import lpft_config, run_record, start_key
from training.recipe.pretrain import PretrainConfig, pretrain

REPO = Path(__file__).resolve().parent.parent.parent
INITS = ("pretrained", "random", "image_level", "linear_probe")

#: What ``--scale`` changes: the pre-training config and the fine-tuning budget (the same for every start).
SCALES: dict[str, dict[str, Any]] = {
    "cpu": {
        "pretrain_config": "training/configs/label-efficiency-cpu.yaml",
        "finetune": {"steps": 200, "batch_size": 8, "chip": 64, "threads": 1, "head_lr": 1e-3},
    },
    "gpu": {
        "pretrain_config": "training/configs/gpu.yaml",
        "finetune": {"steps": 1000, "batch_size": 32, "chip": 64, "threads": 0, "head_lr": 1e-3},
    },
}
DEFAULT_SEEDS = ["0.01:10", "0.05:10", "0.25:5", "1:5"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="labelled folder (B*.tif + labels.tif + classes.json)")
    p.add_argument(
        "--seeds-per-fraction",
        nargs="+",
        default=DEFAULT_SEEDS,
        metavar="FRACTION:N",
        help="label fractions and how many seeds (0..N-1) each gets",
    )
    p.add_argument("--max-seeds", type=int, default=None, help="cap the seeds of every fraction (a shorter run)")
    p.add_argument(
        "--time-budget-min",
        type=float,
        default=None,
        help="start no new seed round after this many minutes; results so far are written",
    )
    p.add_argument("--inits", nargs="+", default=["pretrained", "random", "linear_probe"], choices=INITS)
    p.add_argument("--lr-grid", type=float, nargs="+", default=[1e-4, 1e-3], help="encoder lrs tried per start")
    p.add_argument(
        "--batchnorm-grid",
        nargs="+",
        choices=BATCHNORM_MODES,
        default=["train"],
        help="BatchNorm modes tried per start with every lr (finetune.py --batchnorm); the grid picks the pair",
    )
    p.add_argument("--grid-fraction", type=float, default=0.05, help="label fraction of the lr choice")
    p.add_argument(
        "--grid-seeds",
        "--grid-seed",
        dest="grid_seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds of the lr choice: the mean validation mIoU over them picks each start's lr",
    )
    p.add_argument(
        "--grid-val",
        choices=VAL_CHIPS,
        default="val-block",
        help="what scores the lr grid: the validation block (12 chips on brandenburg-osm) or the training chips the "
        "grid fraction leaves out",
    )
    p.add_argument(
        "--grid-from",
        metavar="JSON",
        help="take each start's lr and BatchNorm mode from this earlier results file instead of running the grid",
    )
    p.add_argument(
        "--label-unit",
        choices=LABEL_UNITS,
        default="chips",
        help="what a label fraction is a share of (finetune.py --label-unit): whole training chips, or the labelled "
        "pixels of every training chip (at fraction 1 the two are the same runs)",
    )
    p.add_argument("--scale", default="cpu", choices=sorted(SCALES))
    p.add_argument("--pretrain-config", help="override the scale's pre-training config")
    p.add_argument(
        "--pretrain-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra pre-training override (repeatable), applied to both pre-trainings",
    )
    p.add_argument("--data-root", default=None, help="pre-training data root (default from the config)")
    p.add_argument("--encoder", help="use this dense encoder instead of pre-training one")
    p.add_argument("--image-level-encoder", help="use this image-level encoder instead of pre-training one")
    p.add_argument("--finetune-steps", type=int)
    p.add_argument("--finetune-batch-size", type=int)
    p.add_argument("--chip", type=int)
    p.add_argument("--work-dir", default="runs/label_efficiency")
    p.add_argument(
        "--reuse-runs",
        nargs="+",
        default=[],
        metavar="JSON",
        help="earlier results files (e.g. docs/results/label_efficiency.json) whose runs seed the cache; a run is "
        "reused only for the same start key, fraction, seed, lr and schedule (random starts: the same architecture, "
        "bands and normalisation), as with --work-dir",
    )
    p.add_argument("--out-json", default="docs/results/label_efficiency.json")
    p.add_argument("--out-md", default="docs/results/label_efficiency.md")
    p.add_argument("--out-png", default="docs/results/label_efficiency.png")
    args = p.parse_args(argv)
    try:
        pairs = [(float(f), int(n)) for f, n in (item.split(":") for item in args.seeds_per_fraction)]
    except ValueError as err:
        raise SystemExit(
            f"--seeds-per-fraction takes FRACTION:N items (e.g. 0.01:10), got {args.seeds_per_fraction}"
        ) from err
    args.seeds = {f: min(n, args.max_seeds) if args.max_seeds else n for f, n in pairs}
    args.fractions = [f for f, _ in pairs]
    return args


def _pretrain(args: argparse.Namespace, method: str, work: Path) -> str:
    out = work / f"pretrain-{method}"
    config = PretrainConfig(
        configs=[args.pretrain_config or SCALES[args.scale]["pretrain_config"]],
        overrides=[f"loss.method={method}", *args.pretrain_set],
        data_root=args.data_root or None,
        output_dir=out,
        progress=False,
    )
    if (out / "encoder" / "config.json").is_file() and (out / "summary.json").is_file():
        print(f"[label_efficiency] reusing {out / 'encoder'}")
    else:
        print(f"[label_efficiency] pre-training ({method}): {config}", flush=True)
        pretrain(config)
    return str(out / "encoder")


def _finetune_settings(args: argparse.Namespace) -> dict[str, Any]:
    f = dict(SCALES[args.scale]["finetune"])
    if args.finetune_steps:
        f["steps"] = args.finetune_steps
    if args.finetune_batch_size:
        f["batch_size"] = args.finetune_batch_size
    if args.chip:
        f["chip"] = args.chip
    return f


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.perf_counter()
    command = "python training/experiments/label_efficiency.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    work = Path(args.work_dir)
    encoders: dict[str, str] = {}
    if set(args.inits) & {"pretrained", "random", "linear_probe"}:
        encoders["pretrained"] = args.encoder or _pretrain(args, "dense", work)
    if "image_level" in args.inits:
        encoders["image_level"] = args.image_level_encoder or _pretrain(args, "image_level", work)
    settings = _finetune_settings(args)
    schedule = f"|lpft|steps={settings['steps']}|batch={settings['batch_size']}|head_lr={settings['head_lr']}"
    starts = {init: start_key(init, encoders) + schedule for init in args.inits}
    partial = work / "runs.json"  # finished runs, so an interrupted experiment continues
    runs: list[dict] = json.loads(partial.read_text())["runs"] if partial.is_file() else []
    for earlier in args.reuse_runs:  # finished runs of earlier experiments (their lr-grid runs too)
        data = json.loads(Path(earlier).read_text())
        runs += [r for r in data["runs"] + data.get("lr_grid_runs", []) if r["start"] in starts.values()]

    def run(init: str, fraction: float, seed: int, lr: float | None, val: str = "val-block", bn: str = "train") -> dict:
        """One fine-tune, or its finished record (records without ``val_chips`` scored the validation block; without
        ``batchnorm``, BatchNorm trained; without ``label_unit``, whole chips were drawn)."""
        unit = "chips" if fraction == 1 else args.label_unit
        want = (init, starts[init], fraction, seed, lr, val, bn, unit)
        for r in runs:
            have = (r["init"], r["start"], r["fraction"], r["seed"], r["encoder_lr"], r.get("val_chips", "val-block"))
            if have + (r.get("batchnorm", "train"), r.get("label_unit", "chips")) == want:
                return r
        res = finetune(lpft_config(args.data, settings, init, fraction, seed, encoders, lr, val, bn, unit))
        rec = run_record(init, starts[init], fraction, seed, res)
        runs.append(rec)
        write_json(partial, {"runs": runs}, indent=2)
        print(
            f"[label_efficiency] {init:>12s} {100 * fraction:g} % seed {seed} lr {lr} bn {bn}: test mIoU "
            f"{100 * rec['miou']:.2f}, val {100 * (rec['final_val_miou'] or 0):.2f} ({res['wall_time_s']:.0f} s)",
            flush=True,
        )
        return rec

    tuned = [i for i in args.inits if i != "linear_probe"]
    grid_meta = {k: getattr(args, k) for k in ("lr_grid", "grid_fraction", "grid_seeds", "grid_val")}
    if args.grid_from:  # the choice of an earlier experiment, carried over as it was made
        source = json.loads(Path(args.grid_from).read_text())
        grid = source["lr_grid_runs"]
        grid_meta = {k: source["meta"][k] for k in grid_meta}
    else:
        grid = [
            run(i, args.grid_fraction, seed, lr, args.grid_val, bn)
            for seed in args.grid_seeds
            for bn in args.batchnorm_grid
            for lr in args.lr_grid
            for i in tuned
        ]
    choice = choose_settings(grid, tuned)
    lr_choice = {init: lr for init, (lr, _) in choice.items()}
    bn_choice = {init: bn for init, (_, bn) in choice.items()}
    print(
        f"[label_efficiency] encoder lr, BatchNorm per start (chosen on {grid_meta['grid_val']}): {choice}", flush=True
    )
    keep: list[dict] = []
    for i in range(max(args.seeds.values())):  # seed rounds: every fraction gets seed i before any gets i + 1
        if args.time_budget_min and (time.perf_counter() - t0) / 60 > args.time_budget_min:
            print(f"[label_efficiency] time budget reached before seed round {i}", flush=True)
            break
        for fraction in args.fractions:
            if args.time_budget_min and (time.perf_counter() - t0) / 60 > args.time_budget_min:
                break
            if i < args.seeds[fraction]:
                keep += [
                    run(init, fraction, i, lr_choice.get(init), bn=bn_choice.get(init, "train")) for init in args.inits
                ]
    seeds_run = {f"{f:g}": sorted({r["seed"] for r in keep if r["fraction"] == f}) for f in args.fractions}
    meta = {
        "command": command,
        "date": _dt.date.today().isoformat(),
        "scale": args.scale,
        "data": args.data,
        "encoders": encoders,
        "inits": list(args.inits),
        "seeds_planned": {f"{f:g}": n for f, n in args.seeds.items()},
        "seeds_run": seeds_run,
        **grid_meta,
        "batchnorm_grid": sorted({r.get("batchnorm", "train") for r in grid}, reverse=True),
        "grid_from": args.grid_from,
        "label_unit": args.label_unit,
        "n_runs": len(keep) + len(grid),
        "wall_time_s": time.perf_counter() - t0,
        "finetune_wall_time_s": float(sum(r["wall_time_s"] for r in {id(r): r for r in keep + grid}.values())),
        "finetune": settings,
    }
    summary = summarise(keep, list(args.fractions), list(args.inits))
    result = {
        "protocol": "LP-FT, encoder lr per start from a validation grid, final step, paired seeds",
        "fractions": list(args.fractions),
        "lr_choice": lr_choice,
        "batchnorm_choice": bn_choice,
        "summary": summary,
        "paired": paired(keep, list(args.fractions)),
        "runs": keep,
        "lr_grid_runs": grid,
        "meta": meta,
    }
    write_json(args.out_json, result, indent=2)
    write_markdown(Path(args.out_md), result)
    write_plot(
        Path(args.out_png),
        summary,
        list(args.fractions),
        f"label efficiency (LP-FT), {Path(args.data).name}",
        "labelled pixels kept (%)" if args.label_unit == "pixels" else "training chips used (%)",
    )
    print(Path(args.out_md).read_text())
    return result


if __name__ == "__main__":
    main()
