"""Label-efficiency experiment: pre-trained vs random vs image-level-pre-trained (vs linear probe) starts.

    python training/experiments/label_efficiency.py --data ../shared/data/labelled/brandenburg-osm
    python training/experiments/label_efficiency.py --data ... --scale gpu            # bigger patches/steps/model
    python training/experiments/label_efficiency.py --data ... --encoder models/x --image-level-encoder runs/y/encoder

1. Pre-trains the dense (Embedding Earth) encoder and the image-level (SimCLR-style) encoder with
   the same config and budget (skipped when ``--encoder`` / ``--image-level-encoder`` are given).
2. Fine-tunes every start at every label fraction and seed (``training/finetune.py``: region split,
   model selection on the validation block, test block only for the reported mIoU).
3. Writes the JSON (``{"fractions": [...], "runs": [{"init", "fraction", "seed", "miou", ...}]}``),
   a markdown table (mean +- std over seeds, with the command and date) and a plot.

Starts (``--inits``): ``pretrained`` (fine-tune the dense encoder), ``random`` (same architecture
and normalisation, random weights; a new init per seed), ``image_level`` (fine-tune the image-level
encoder), ``linear_probe`` (frozen dense encoder + 1x1 classifier).
CPU defaults (``--scale cpu``) finish in about 30-45 min on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np

from training import finetune as ft
from training import pretrain

REPO = Path(__file__).resolve().parent.parent.parent
INITS = ("pretrained", "random", "image_level", "linear_probe")

#: What ``--scale`` changes: the pre-training config and the fine-tuning budget.
SCALES: dict[str, dict[str, Any]] = {
    "cpu": {
        "pretrain_config": "training/configs/label-efficiency-cpu.yaml",
        "finetune": {"steps": 200, "batch_size": 8, "eval_every": 50, "chip": 64, "threads": 1},
    },
    "gpu": {
        "pretrain_config": "training/configs/gpu.yaml",
        "finetune": {"steps": 2000, "batch_size": 32, "eval_every": 200, "chip": 64, "threads": 0},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="labelled folder (B*.tif + labels.tif + classes.json)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.25, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
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
    p.add_argument(
        "--select",
        choices=("val", "last"),
        default="val",
        help="fine-tuning model selection: best validation step (default) or the final step",
    )
    p.add_argument("--work-dir", default="runs/label_efficiency")
    p.add_argument("--out-json", default="docs/results/label_efficiency.json")
    p.add_argument("--out-md", default="docs/results/label_efficiency.md")
    p.add_argument("--out-png", default="docs/results/label_efficiency.png")
    return p.parse_args(argv)


def _pretrain(args: argparse.Namespace, method: str, work: Path) -> str:
    config = args.pretrain_config or SCALES[args.scale]["pretrain_config"]
    out = work / f"pretrain-{method}"
    argv = ["--config", str(config), "--output-dir", str(out), "--no-progress", "--set", f"loss.method={method}"]
    for o in args.pretrain_set:
        argv += ["--set", o]
    if args.data_root:
        argv += ["--data-root", args.data_root]
    if (out / "encoder" / "config.json").is_file() and (out / "summary.json").is_file():
        print(f"[label_efficiency] reusing {out / 'encoder'}")
    else:
        print(f"[label_efficiency] pre-training ({method}): training/pretrain.py {' '.join(argv)}", flush=True)
        pretrain.main(argv)
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


def _finetune_argv(args: argparse.Namespace, init: str, fraction: float, seed: int, encoders: dict) -> list[str]:
    f = _finetune_settings(args)
    argv = [
        "--data",
        args.data,
        "--label-fraction",
        str(fraction),
        "--seed",
        str(seed),
        "--no-save",
        "--steps",
        str(f["steps"]),
        "--batch-size",
        str(f["batch_size"]),
        "--eval-every",
        str(f["eval_every"]),
        "--chip",
        str(f["chip"]),
        "--threads",
        str(f["threads"]),
        "--select",
        args.select,
    ]
    if init == "pretrained":
        argv += ["--init", f"pretrained:{encoders['pretrained']}"]
    elif init == "image_level":
        argv += ["--init", f"pretrained:{encoders['image_level']}"]
    elif init == "linear_probe":
        argv += ["--init", f"pretrained:{encoders['pretrained']}", "--freeze-encoder"]
    else:  # same architecture, bands and normalisation as the dense encoder; weights random per seed
        argv += ["--init", "random", "--norm-from", encoders["pretrained"]]
    return argv


def start_key(init: str, encoders: dict[str, str]) -> str:
    """What a fine-tune starts from, so ``runs.json`` reuses a run only for the same start.

    Pre-trained starts: the encoder's weights file (path and SHA-256). Random starts: the
    architecture, bands and normalisation they copy (the weights are random per seed).
    """
    folder = Path(encoders["image_level" if init == "image_level" else "pretrained"])
    if init == "random":
        cfg = json.loads((folder / "config.json").read_text())
        spec = {k: cfg.get(k) for k in ("architecture", "bands", "embed_dim", "normalization")}
        return "random:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]
    return f"{init}:{folder}:{digest}"


def summarise(runs: list[dict], fractions: list[float], inits: list[str]) -> dict[str, dict[str, dict]]:
    """init -> fraction -> {mean, std, n, per_class: {class: (mean, std)}} (mIoU in %)."""
    out: dict[str, dict[str, dict]] = {}
    for init in inits:
        for f in fractions:
            rs = [r for r in runs if r["init"] == init and abs(r["fraction"] - f) < 1e-12]
            if not rs:
                continue
            m = 100 * np.array([r["miou"] for r in rs])
            per_class = {}
            for c in rs[0]["per_class_iou"]:
                v = [100 * r["per_class_iou"][c] for r in rs if r["per_class_iou"][c] is not None]
                per_class[c] = (float(np.mean(v)), float(np.std(v))) if v else None
            out.setdefault(init, {})[f"{f:g}"] = {
                "mean": float(m.mean()),
                "std": float(m.std()),
                "n": len(rs),
                "per_class": per_class,
            }
    return out


def write_markdown(path: Path, summary: dict, fractions: list[float], meta: dict) -> None:
    cols = [f"{100 * f:g} %" for f in fractions]
    lines = [
        f"# Label efficiency on `{meta['data']}`",
        "",
        f"Date {meta['date']}, scale `{meta['scale']}`, wall time of this invocation {meta['wall_time_s'] / 60:.1f} min; "
        f"the {meta['n_runs']} fine-tunes took {meta['finetune_wall_time_s'] / 60:.1f} min summed (runs finished by "
        "an earlier, interrupted or split invocation are reused from `<work-dir>/runs.json`). Command:",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        "Test-block mIoU (%), mean +- std over seeds (n), by share of training chips:",
        "",
        "| start | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for init, by_f in summary.items():
        cells = [
            f"{by_f[f'{f:g}']['mean']:.2f} +- {by_f[f'{f:g}']['std']:.2f} ({by_f[f'{f:g}']['n']})"
            if f"{f:g}" in by_f
            else ""
            for f in fractions
        ]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    lines += ["", "Per-class test IoU (%), mean +- std over seeds:", ""]
    classes = next(iter(next(iter(summary.values())).values()))["per_class"].keys() if summary else []
    lines += ["| start | fraction | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
    for init, by_f in summary.items():
        for f, s in by_f.items():
            cells = ["-" if v is None else f"{v[0]:.1f} +- {v[1]:.1f}" for v in s["per_class"].values()]
            lines.append(f"| {init} | {100 * float(f):g} % | " + " | ".join(cells) + " |")
    lines += ["", f"Encoders: {json.dumps(meta['encoders'])}.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def write_plot(path: Path, summary: dict, fractions: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for init, by_f in summary.items():
        fs = [f for f in fractions if f"{f:g}" in by_f]
        ax.errorbar(
            [100 * f for f in fs],
            [by_f[f"{f:g}"]["mean"] for f in fs],
            yerr=[by_f[f"{f:g}"]["std"] for f in fs],
            marker="o",
            capsize=3,
            label=init,
        )
    ax.set_xscale("log")
    ax.set_xlabel("training chips used (%)")
    ax.set_ylabel("test mIoU (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.perf_counter()
    command = "python training/experiments/label_efficiency.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    work = Path(args.work_dir)
    encoders: dict[str, str] = {}
    needs = set(args.inits)
    if needs & {"pretrained", "random", "linear_probe"}:
        encoders["pretrained"] = args.encoder or _pretrain(args, "dense", work)
    if "image_level" in needs:
        encoders["image_level"] = args.image_level_encoder or _pretrain(args, "image_level", work)
    partial = work / "runs.json"  # finished fine-tunes, so an interrupted experiment continues
    runs: list[dict] = json.loads(partial.read_text())["runs"] if partial.is_file() else []
    starts = {
        init: start_key(init, encoders) + ("" if args.select == "val" else f"|select={args.select}")
        for init in args.inits
    }
    done = {(r["init"], r["fraction"], r["seed"], r.get("start")) for r in runs}
    for fraction in args.fractions:
        for seed in args.seeds:
            for init in args.inits:
                if (init, fraction, seed, starts[init]) in done:
                    continue
                res = ft.finetune(ft.parse_args(_finetune_argv(args, init, fraction, seed, encoders)))
                t = res["test"]
                runs.append(
                    {
                        "init": init,
                        "start": starts[init],
                        "fraction": fraction,
                        "seed": seed,
                        "miou": t["miou"],
                        "per_class_iou": t["per_class_iou"],
                        "pixel_accuracy": t["pixel_accuracy"],
                        "train_chips": res["train_chips"],
                        "selected_step": res["selected_step"],
                        "best_val_miou": res["best_val_miou"],
                        "wall_time_s": res["wall_time_s"],
                    }
                )
                _atomic_json(partial, {"runs": runs})
                print(
                    f"[label_efficiency] {init:>12s} fraction {fraction:g} seed {seed}: "
                    f"test mIoU {100 * t['miou']:.2f} ({res['train_chips']} chips, {res['wall_time_s']:.0f} s)",
                    flush=True,
                )
    keep = [
        r
        for r in runs
        if r["init"] in args.inits
        and r["fraction"] in args.fractions
        and r["seed"] in args.seeds
        and r.get("start") == starts[r["init"]]
    ]
    meta = {
        "command": command,
        "date": _dt.date.today().isoformat(),
        "scale": args.scale,
        "data": args.data,
        "encoders": encoders,
        "wall_time_s": time.perf_counter() - t0,
        "inits": list(args.inits),
        "seeds": list(args.seeds),
        "n_runs": len(keep),
        "finetune_wall_time_s": float(sum(r["wall_time_s"] for r in keep)),
        "finetune": {**_finetune_settings(args), "select": args.select},
    }
    result = {"fractions": list(args.fractions), "runs": keep, "meta": meta}
    summary = summarise(keep, list(args.fractions), list(args.inits))
    _atomic_json(Path(args.out_json), result)
    write_markdown(Path(args.out_md), summary, list(args.fractions), meta)
    write_plot(Path(args.out_png), summary, list(args.fractions), f"label efficiency, {Path(args.data).name}")
    print(Path(args.out_md).read_text())
    return result


if __name__ == "__main__":
    main()
