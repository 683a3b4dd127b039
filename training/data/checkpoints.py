"""Model folders and pre-training checkpoints on disk: written whole, read back as encoders.

A pre-training run folder holds ``config.yaml`` (the resolved recipe) and ``checkpoints/step_NNNNNNN/``
(Accelerate's ``save_state``): the prepared query net in :data:`QUERY_WEIGHTS` and the registered
objects in order (0 = the run's progress state, 1 = the EMA key net, if any) in ``custom_checkpoint_N.pkl``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from earth_embed import EarthEncoder
from earth_embed.errors import ConfigError

QUERY_WEIGHTS = "model.safetensors"
KEY_WEIGHTS = "custom_checkpoint_1.pkl"


def save_pretrained_atomic(model: nn.Module, folder: Path) -> Path:
    """``model.save_pretrained`` into a temporary sibling folder, then swap it in (never a half-written folder)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)  # type: ignore[operator]
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def is_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` is ``RUN/checkpoints/step_N`` of a pre-training run (query weights and ``RUN/config.yaml``)."""
    folder = Path(folder)
    return (folder / QUERY_WEIGHTS).is_file() and (folder.parent.parent / "config.yaml").is_file()


def run_config(ckpt: Path) -> dict:
    """The resolved recipe (``RUN/config.yaml``) of the run that wrote checkpoint ``ckpt``."""
    ckpt = Path(ckpt)
    if not is_checkpoint(ckpt):
        raise ConfigError(f"{ckpt} is not a pre-training checkpoint (RUN/checkpoints/step_N with RUN/config.yaml)")
    return yaml.safe_load((ckpt.parent.parent / "config.yaml").read_text())


def encoder_from_checkpoint(cfg: dict, ckpt: Path | None, which: str = "query") -> EarthEncoder:
    """The run's encoder with the weights of ``ckpt`` (``query``: trained by gradient; ``key``: the EMA copy;
    ``ckpt=None``: fresh random weights)."""
    norm = cfg["model"]["normalization"]
    enc = EarthEncoder.new(
        cfg["model"]["architecture"],
        bands=cfg["data"]["bands"],
        embed_dim=int(cfg["model"]["embed_dim"]),
        mean=norm["mean"],
        std=norm["std"],
    )
    if ckpt is None:
        return enc.eval()
    if which == "query":
        state = load_file(ckpt / QUERY_WEIGHTS)
    else:
        state = torch.load(ckpt / KEY_WEIGHTS, map_location="cpu", weights_only=True)
    enc.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    return enc.eval()
