"""The report of a label-efficiency experiment: a markdown table and a plot of its results JSON."""

from __future__ import annotations

import json
from pathlib import Path


def _grid_chips(meta: dict) -> str:
    """What scored the lr grid, in words (results before ``grid_val`` existed scored the validation block)."""
    unused = meta.get("grid_val") == "unused-train"
    where = "the training chips the grid fraction leaves out" if unused else "the validation block"
    return f"{where}, carried over from `{meta['grid_from']}`" if meta.get("grid_from") else where


def _grid_seeds(meta: dict) -> list[int]:
    """The lr grid's seeds (results files before 2026-12-03 name one ``grid_seed``)."""
    return list(meta.get("grid_seeds", [meta.get("grid_seed", 0)]))


def _unit(meta: dict) -> str:
    """What the label fractions are a share of (results without `label_unit`: whole chips)."""
    if meta.get("label_unit", "chips") == "pixels":
        return "the labelled pixels of every training chip (scattered point labels)"
    return "training chips"


def _batchnorm_choice(result: dict) -> str:
    """The BatchNorm mode per start, where the grid tried more than one (results without `batchnorm_grid`: train mode)."""
    grid = result["meta"].get("batchnorm_grid", ["train"])
    if grid == ["train"]:
        return ""
    return f"; BatchNorm per start (chosen with the lr, from {grid}): {json.dumps(result['batchnorm_choice'])}"


def write_markdown(path: Path, result: dict) -> None:
    meta, fractions = result["meta"], result["fractions"]
    summary, pair = result["summary"], result["paired"]
    cols = [f"{100 * f:g} %" for f in fractions]
    lines = [
        f"# Label efficiency on `{meta['data']}` (LP-FT, paired seeds)",
        "",
        f"Date {meta['date']}, scale `{meta['scale']}`, {meta['n_runs']} runs ({meta['finetune_wall_time_s'] / 60:.1f} min "
        f"of fine-tuning summed); fine-tuning {json.dumps(meta['finetune'])}; encoder lr per start "
        f"(chosen on {_grid_chips(meta)} at {100 * meta['grid_fraction']:g} %, seeds {_grid_seeds(meta)}, from "
        f"{meta['lr_grid']}): {json.dumps(result['lr_choice'])}{_batchnorm_choice(result)}. Seeds run per fraction: "
        f"{json.dumps(meta['seeds_run'])} (planned {json.dumps(meta['seeds_planned'])}). Command:",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        f"Test-block mIoU (%), mean +- std over seeds (n), by share of {_unit(meta)}:",
        "",
        "| start | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for init, by_f in summary.items():
        cells = [
            f"{by_f[k]['mean']:.2f} +- {by_f[k]['std']:.2f} ({by_f[k]['n']})" if (k := f"{f:g}") in by_f else ""
            for f in fractions
        ]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    cells = []
    for f in fractions:
        q = pair.get(f"{f:g}")
        se = "n/a" if q is None or q["se"] is None else f"{q['se']:.2f}"
        cells.append("" if q is None else f"{q['mean']:+.2f} +- {se} ({q['wins']}/{q['n']} wins)")
    lines.append("| **pretrained - random** (paired, mean +- s.e.) | " + " | ".join(cells) + " |")
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


def write_plot(
    path: Path, summary: dict, fractions: list[float], title: str, xlabel: str = "training chips used (%)"
) -> None:
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test mIoU (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
