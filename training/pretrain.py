"""Embedding Earth dense contrastive pre-training with Accelerate (the script; the recipe is training/recipe/).

    python training/pretrain.py --config training/configs/cpu.yaml
    accelerate launch --cpu --num_processes 2 training/pretrain.py --config training/configs/smoke.yaml
    accelerate launch --multi_gpu training/pretrain.py --config ... --set train.batch_size=64
    python training/pretrain.py --config ... --resume            # continue from the latest save_state

The flags build a :class:`training.recipe.pretrain.PretrainConfig`; :func:`training.recipe.pretrain.pretrain`
runs it and writes ``<output-dir>/`` (default ``runs/<config name>/``): ``config.yaml`` (resolved),
``log.csv``, ``checkpoints/step_NNNNNNN/``, ``summary.json`` and ``encoder/`` (see ``docs/pretraining.md``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python training/pretrain.py`: import `training` from the repository, not training/
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from earth_embed.errors import ConfigError
from training.recipe.launch import respawn_cpu_ranks
from training.recipe.pretrain import PretrainConfig, PretrainResult, pretrain, scales


def parse_args(argv: list[str] | None = None) -> PretrainConfig:
    """The command line as a :class:`PretrainConfig` (flags left out keep the dataclass's defaults)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        dest="configs",
        metavar="CONFIG",
        action="append",
        default=[],
        help="YAML config (training/configs/*.yaml); repeat to layer files (later ones win)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=3e-4 (repeatable)",
    )
    p.add_argument(
        "--scale",
        choices=scales(),
        help="layer training/configs/scale/<SCALE>.yaml over --config (e.g. gpu: bigger batch, "
        "windows and step count); the run's name gets the suffix -<SCALE>",
    )
    p.add_argument("--steps", type=int, help="shortcut for --set train.steps=N")
    p.add_argument("--batch-size", type=int, help="shortcut for --set train.batch_size=N")
    p.add_argument("--data-root", help="shared data folder (default from the config: ../shared/data)")
    p.add_argument("--output-dir", help="run folder (default runs/<config name>/)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="resume from PATH, or from the latest checkpoint of --output-dir",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop (after saving state) once this many optimizer steps are done; the schedule still "
        "targets train.steps (use to split a run across sessions)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    return PretrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> PretrainResult:
    """Parse the flags and pre-train; without ``argv`` (the command line) N CPU ranks are started if asked for."""
    config = parse_args(argv)
    if argv is None:
        respawn_cpu_ranks(__file__)
    return pretrain(config)


def cli(argv: list[str] | None = None) -> int:
    """``python training/pretrain.py``: config errors print as one message (exit 2), not a traceback."""
    try:
        main(argv)
    except ConfigError as err:
        print(f"pretrain.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
