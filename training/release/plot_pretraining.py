"""Plot a pre-training run's loss curve (and throughput) from its ``log.csv``.

python -m training.release.plot_pretraining runs/cpu --out docs/pretraining_loss.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.recipe.tracking import read_log


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="pre-training output dir (holds log.csv, summary.json)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(args.run_dir)
    rows = read_log(run / "log.csv")
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    steps = [r["step"] for r in rows]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(steps, [r["loss"] for r in rows], lw=0.6, alpha=0.5, label="loss at the logged step")
    ax.plot(steps, [r["loss_avg"] for r in rows], lw=1.6, label="mean over each logging interval")
    ax.set_ylabel("dense InfoNCE (symmetrised)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    title = args.title or f"pre-training {run.name}"
    if summary:
        title += (
            f": {summary['steps']} steps, {summary['wall_time_s'] / 60:.1f} min, "
            f"{summary['samples_per_s']:.1f} view pairs/s"
        )
    ax.set_title(title, fontsize=9)
    ax2.plot(steps, [r["samples_per_s"] for r in rows], lw=0.8, color="gray")
    ax2.set_ylabel("pairs/s", fontsize=8)
    ax2.set_xlabel("optimizer step")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
