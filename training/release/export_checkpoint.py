"""Save the encoder of one pre-training checkpoint as a loadable encoder folder (``from_pretrained``).

    python -m training.release.export_checkpoint runs/release3/checkpoints/step_0000100 runs/release3/encoder_step100
    python -m training.release.export_checkpoint runs/release3/checkpoints/step_0000100 OUT --key   # the EMA key encoder

The run's ``config.yaml`` (two folders up) gives the architecture, bands and normalisation; the card
records which run, step and encoder the weights come from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.data.checkpoints import encoder_from_checkpoint, run_config, save_pretrained_atomic


def run_metadata(ckpt: Path, which: str, cfg: dict) -> dict:
    """The card's metadata: the run's own when it finished (``RUN/encoder``: training facts, data attribution), with
    ``model selection`` naming this checkpoint; else just the checkpoint and config."""
    step = ckpt.name.rsplit("_", 1)[-1]
    where = f"{ckpt} ({which} encoder)"
    run_encoder = ckpt.parent.parent / "encoder" / "config.json"
    if not run_encoder.is_file():
        return {"training": {"checkpoint": where, "config": cfg["name"]}}
    meta = dict(json.loads(run_encoder.read_text()).get("metadata", {}))
    card = dict(meta.get("training", {}))
    of = f"step {int(step)} of {cfg['train']['steps']}" if step.isdigit() else ckpt.name
    card["model selection"] = (
        f"the {which} encoder at {of}, exported from {ckpt} by training/release/export_checkpoint.py"
    )
    card["checkpoint"] = where
    return meta | {"training": card}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="RUN/checkpoints/step_NNNNNNN")
    p.add_argument("out", help="encoder folder to write")
    p.add_argument("--key", action="store_true", help="the EMA key encoder instead of the query encoder")
    args = p.parse_args(argv)
    ckpt = Path(args.checkpoint)
    cfg = run_config(ckpt)  # a ConfigError names what a checkpoint folder holds
    which = "key" if args.key else "query"
    enc = encoder_from_checkpoint(cfg, ckpt, which)
    enc.config.name = f"{cfg['name']}-{ckpt.name}-{which}"
    enc.config.metadata = run_metadata(ckpt, which, cfg)
    out = save_pretrained_atomic(enc, Path(args.out))
    print(f"saved {which} encoder of {ckpt} to {out}")
    return out


if __name__ == "__main__":
    main()
