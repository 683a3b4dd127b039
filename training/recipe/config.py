"""Pre-training configuration: defaults, YAML files, ``--set key.sub=value`` overrides."""

from __future__ import annotations

import copy
import difflib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from earth_embed.bands import RELEASE_BANDS
from earth_embed.errors import ConfigError
from training.recipe.views import ViewConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

#: Every key a config may set; YAML files override these and may not add new keys.
DEFAULTS: dict[str, Any] = {
    "name": "default",
    "data": {
        "sources": "training/configs/data/pretrain-real.yaml",  # data config (relative to the repo or cwd)
        "data_root": "../shared/data",
        "bands": list(RELEASE_BANDS),
        "patch_size": 96,  # windows read from the scenes; views are cropped from them
        "max_nodata": 0.05,
        "num_workers": 0,
        "cross_p": 0.0,  # share of windows whose view 2 is the same ground from another acquisition (group)
    },
    "model": {
        "architecture": "unet-resnet18",
        "embed_dim": 64,
        "normalization": "auto",  # "auto" (measured on stats_windows windows) or {mean: [...], std: [...]}
        "stats_windows": 64,
        "channels_last": True,
        "compile": False,
        "init_from": None,  # an encoder folder to start from (its weights and normalisation), e.g. a release
    },
    "views": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ViewConfig()).items()},
    "loss": {
        "method": "dense",  # dense (Embedding Earth) | image_level (SimCLR-style pooled baseline)
        "tau": 0.1,
        "points": 128,  # query pixels per view and image
        "proj_dim": 128,
        "proj_hidden": 0,  # 0: one 1x1 conv (linear); >0: 1x1 conv - BN - ReLU - 1x1 conv
        "key_encoder": "ema",  # ema | shared (same weights, stop-gradient)
        "ema": 0.99,
        "max_negatives": None,
        "same_image_negatives": False,
        "min_dist": 8.0,
        "mask_same_ground": False,
        "cross_invariance_weight": 0.0,  # > 0: the embedding itself (not only its projection) agrees across dates
        "cross_pool": 3,  # odd px: a positive across acquisitions is the key map's box mean over cross_pool^2 px  # keys of windows showing the same ground (scene or group) are never negatives
        "recon_weight": 0.0,  # input-anchored target: a linear head reconstructs the clean bands from the embedding
        "recon_whiten": True,  # ... in PCA-whitened band space (from the measured band correlation)
        "recon_target": "bands",  # bands | stack: the hand-made stack (bands, box means, local std), standardised
        "recon_within_weight": 0.0,  # + 1 - R^2 within each image of the same head (needs recon_weight > 0)
        "recon_log_std": False,  # the stack target's local std as log(std + 0.01) (relative texture)
        "vc_weight": 0.0,  # per-image VICReg variance + covariance on the embedding at the query pixels
        "spectral_weight": 0.0,  # > 0: embedding distance between pixels of a window follows their spectral distance
        "spectral_box": 5,  # odd px: the spectra are each view's bands box-averaged over spectral_box^2 px
        "spectral_form": "hinge",  # hinge (the pairs that differ most must differ at least as much) | two_sided
        "spectral_top": 0.25,  # hinge: the share of pairs, by spectral distance, the term applies to
    },
    "train": {
        "steps": 1000,  # optimizer steps
        "batch_size": 16,  # patches per process and micro-step
        "grad_accum": 1,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "warmup_steps": 50,
        "min_lr_ratio": 0.01,
        "grad_clip": 1.0,
        "mixed_precision": "auto",  # auto: bf16 on a GPU that has it (else fp16), no on CPU
        "seed": 0,
        "threads": 0,  # torch threads per process on CPU; 0 = cores / processes
        "save_every": 200,  # save_state every N steps (0 = only at the end)
        "keep_checkpoints": 2,
        "log_every": 10,
        "probe_every": 0,  # linear probe of the encoder every N steps (0 = never); curve in probe.csv
        "probe_data": "labelled/brandenburg-osm",  # under data_root: fit on its training block, score on validation
        "probe_max_pixels": 20000,  # probe training pixels (subsampled)
        # which encoder becomes encoder/: last (final step) | probe (best validation-block probe) |
        # probe_cv (best 3-fold spatial CV probe inside the training block, query or EMA key encoder)
        "select": "last",
        # the split of the probe curve in probe.csv: val | cv (null: cv with select probe_cv, else val)
        "probe_split": None,
    },
}


def deep_update(base: dict, new: dict, where: str = "") -> dict:
    """Recursively update ``base`` with ``new``, refusing keys ``base`` does not have."""
    for key, value in new.items():
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {where}{key!r}{hint}; known keys here: {sorted(base)}")
        if isinstance(base[key], dict) and base[key] and isinstance(value, dict):
            deep_update(base[key], value, f"{where}{key}.")
        else:
            base[key] = value
    return base


def parse_override(text: str) -> dict:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": 0.0003}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.steps=100")
    key, value = text.split("=", 1)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({err}); e.g. train.steps=100") from err
    if isinstance(parsed, str):  # YAML 1.1 reads "5e-4" as a string; a number is meant
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    node[parts[-1]] = parsed
    return out


def _load_yaml(path: Path) -> Any:
    """The YAML document in ``path``; a syntax error names the file and the line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"{path} is not valid YAML{where}: {problem}. Fix the file (indentation, ':' after keys)."
        ) from err


def _read_yaml(path: str | Path, seen: tuple[Path, ...] = ()) -> tuple[Path, dict]:
    """One config file as a mapping, with its ``base:`` file (same folder or CONFIG_DIR) merged underneath."""
    path = Path(path)
    if not path.is_file() and (CONFIG_DIR / path.name).is_file():
        path = CONFIG_DIR / path.name
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; configs live in {CONFIG_DIR}")
    raw = _load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of sections (data, model, views, loss, train)")
    base = raw.pop("base", None)
    if base is None:
        return path, raw
    base_path = path.parent / base if (path.parent / base).is_file() else Path(base)
    if base_path.resolve() in {p.resolve() for p in seen + (path,)}:
        raise ConfigError(f"{path}: base {base!r} includes itself")
    merged = copy.deepcopy(_read_yaml(base_path, seen + (path,))[1])
    _merge(merged, raw)
    return path, merged


def _merge(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def load_config(path: str | Path | list | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file(s), later files win <- overrides. ``name`` defaults to the first file's stem.

    A file may start from another with ``base: other.yaml`` (its keys then override the base's).
    """
    cfg = copy.deepcopy(DEFAULTS)
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    for n, path in enumerate(paths):
        path, raw = _read_yaml(path)
        if n == 0:
            raw["name"] = (_load_yaml(path) or {}).get("name", path.stem)
        deep_update(cfg, raw)
    for text in overrides or []:
        deep_update(cfg, parse_override(text))
    return cfg


def check_pretrain_config(cfg: dict) -> None:
    """Raise a ConfigError naming the fix for option values, or combinations, that ``pretrain.py`` cannot run."""
    t_cfg, l_cfg = cfg["train"], cfg["loss"]
    if l_cfg["method"] not in ("dense", "image_level"):
        raise ConfigError(f"loss.method must be 'dense' or 'image_level', got {l_cfg['method']!r}")
    if l_cfg["key_encoder"] not in ("ema", "shared"):
        raise ConfigError(f"loss.key_encoder must be 'ema' or 'shared', got {l_cfg['key_encoder']!r}")
    if t_cfg["select"] not in ("last", "probe", "probe_cv") or (
        t_cfg["select"] != "last" and not int(t_cfg["probe_every"])
    ):
        raise ConfigError(
            f"train.select must be 'last', 'probe' or 'probe_cv' (the probes need train.probe_every > 0), "
            f"got select={t_cfg['select']!r}, probe_every={t_cfg['probe_every']!r}"
        )
    split = t_cfg["probe_split"]
    if split not in (None, "val", "cv") or (t_cfg["select"], split) in (("probe_cv", "val"), ("probe", "cv")):
        raise ConfigError(
            f"train.probe_split must be null, 'val' or 'cv' and agree with train.select ('probe' selects on the "
            f"validation block, 'probe_cv' on the cross-validation), got probe_split={split!r}, "
            f"select={t_cfg['select']!r}"
        )
    if l_cfg["recon_target"] not in ("bands", "stack"):
        raise ConfigError(f"loss.recon_target must be 'bands' or 'stack', got {l_cfg['recon_target']!r}")
    if float(l_cfg["recon_within_weight"]) > 0 and not float(l_cfg["recon_weight"]) > 0:
        raise ConfigError(
            "loss.recon_within_weight > 0 weighs the reconstruction head's within-image error: "
            "set loss.recon_weight > 0 as well (e.g. --set loss.recon_weight=1.0)"
        )
    if l_cfg["recon_log_std"] and l_cfg["recon_target"] != "stack":
        raise ConfigError("loss.recon_log_std applies to the stack target: set loss.recon_target=stack as well")
    if l_cfg["spectral_form"] not in ("hinge", "two_sided"):
        raise ConfigError(f"loss.spectral_form must be 'hinge' or 'two_sided', got {l_cfg['spectral_form']!r}")
    top, box = l_cfg["spectral_top"], l_cfg["spectral_box"]
    if not isinstance(top, (int, float)) or not 0 < top <= 1:
        raise ConfigError(f"loss.spectral_top must be a share of the pairs in (0, 1], e.g. 0.25, got {top!r}")
    if not isinstance(box, int) or box < 1 or box % 2 == 0:
        raise ConfigError(f"loss.spectral_box must be an odd number of pixels >= 1 (e.g. 5), got {box!r}")
    pool = l_cfg["cross_pool"]
    if not isinstance(pool, int) or pool < 1 or pool % 2 == 0:
        raise ConfigError(f"loss.cross_pool must be an odd number of pixels >= 1 (e.g. 3), got {pool!r}")
