"""Per-band reflectance mean/std over the pre-training data, as a config block to paste or pass.

    python -m training.data.band_stats --sources training/configs/data/pretrain-real.yaml --windows 512 \
        --out training/configs/normalization-release.yaml

Windows are drawn exactly as pre-training draws them (source weights, nodata rejection, DN offsets
from the data config) at indices disjoint from training. The output is a YAML ``model:
normalization:`` block; ``pretrain.py`` with ``model.normalization: auto`` computes the same figures
itself on ``model.stats_windows`` windows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from earth_embed.bands import RELEASE_BANDS
from training.data.unlabelled import UnlabelledWindows, band_statistics, load_data_config

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="training/configs/data/pretrain-real.yaml")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--bands", nargs="+", default=list(RELEASE_BANDS))
    p.add_argument("--windows", type=int, default=512)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the YAML block here (default: print)")
    args = p.parse_args(argv)
    sources = Path(args.sources) if Path(args.sources).is_file() else REPO / args.sources
    data = load_data_config(sources, args.data_root)
    ds = UnlabelledWindows(data.scenes, args.bands, args.size, length=1, seed=args.seed)
    mean, std = band_statistics(ds, args.windows)
    block = {"model": {"normalization": {"mean": [round(m, 6) for m in mean], "std": [round(s, 6) for s in std]}}}
    text = (
        f"# band reflectance statistics: {args.windows} windows of {args.size} px from {args.sources}, "
        f"seed {args.seed}, bands {' '.join(args.bands)}\n" + yaml.safe_dump(block, sort_keys=False)
    )
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return block


if __name__ == "__main__":
    main()
