"""Embedding Earth dense contrastive pre-training with Accelerate: :func:`pretrain` runs one :class:`PretrainConfig`.

    from training.recipe.pretrain import PretrainConfig, pretrain
    stats = pretrain(PretrainConfig(configs=["training/configs/cpu.yaml"], overrides=["train.lr=3e-4"]))

``python training/pretrain.py`` (and ``accelerate launch training/pretrain.py``) builds the config from
its flags and calls :func:`pretrain`.

Writes ``<output_dir>/`` (default ``runs/<config name>/``): ``config.yaml`` (resolved), ``log.csv``
(Accelerate CSV tracker), ``checkpoints/step_NNNNNNN/`` (``save_state``), ``summary.json`` and
``encoder/`` (``EarthEncoder.save_pretrained``; its card states data, config, steps and wall time).
With ``train.probe_every: N`` a linear probe scores the encoder every N steps on the validation block
of ``train.probe_data`` (``probe.csv``; best so far in ``encoder_best_probe/``), and
``train.select: probe`` makes that best encoder the run's ``encoder/`` (model selection by a probe,
never by the loss); ``train.select: probe_cv`` scores by 3-fold spatial cross-validation inside the
training block instead and also probes the EMA key encoder (:class:`training.evaluation.probe.ProbeSelector`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from earth_embed import EarthEncoder
from earth_embed.errors import ConfigError
from training.data.checkpoints import save_pretrained_atomic
from training.data.unlabelled import UnlabelledWindows, load_data_config
from training.evaluation.probe import ProbeSelector
from training.recipe.config import CONFIG_DIR, check_pretrain_config, load_config
from training.recipe.losses import nt_xent
from training.recipe.model import ema_update
from training.recipe.pretrain_build import build_pretraining
from training.recipe.run_state import FINAL_WINDOW, TrainState, card_metadata, latest_checkpoint, save_checkpoint
from training.recipe.tracking import CSVTracker
from training.recipe.views import ViewConfig, draw_batch_params, make_views

REPO = Path(__file__).resolve().parents[2]


@dataclass
class PretrainConfig:
    """One pre-training run: the recipe (YAML files, then ``section.key=value`` overrides) and where it runs to.

    ``configs`` are layered in order, later files winning (``training/configs/*.yaml``); ``scale`` layers
    ``training/configs/scale/<scale>.yaml`` over them and suffixes the run's name with ``-<scale>``;
    ``steps``, ``batch_size`` and ``data_root`` are shortcuts for ``train.steps``, ``train.batch_size`` and
    ``data.data_root`` overrides (applied after ``overrides``). ``output_dir`` defaults to
    ``runs/<config name>``. ``resume``: ``"latest"`` (the newest checkpoint of ``output_dir``) or a checkpoint
    folder. ``stop_after``: stop (after saving state) once this many optimizer steps are done, the
    schedule still targeting ``train.steps`` (a run split across sessions).
    """

    configs: list[str | Path] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    scale: str | None = None
    steps: int | None = None
    batch_size: int | None = None
    data_root: str | Path | None = None
    output_dir: str | Path | None = None
    resume: str | Path | None = None
    stop_after: int | None = None
    progress: bool = True


class _PretrainSummary(TypedDict):
    steps: int
    steps_this_run: int
    wall_time_s: float
    samples_per_s: float
    final_loss: float
    final_window: int
    finished: bool


class PretrainResult(_PretrainSummary, total=False):
    """What :func:`pretrain` returns and writes to ``summary.json`` (``probe_best``/``selected_step`` with the probe)."""

    probe_best: dict[str, Any]
    selected_step: int


def scales() -> list[str]:
    """The names ``PretrainConfig.scale`` takes (``training/configs/scale/*.yaml``)."""
    return sorted(f.stem for f in (CONFIG_DIR / "scale").glob("*.yaml"))


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    t = cfg["train"]
    base, warm, total = float(t["lr"]), int(t["warmup_steps"]), int(t["steps"])
    if step < warm:
        return base * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return base * (t["min_lr_ratio"] + (1 - t["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress)))


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _mixed_precision(value: str) -> str:
    if value != "auto":
        return value
    if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "false").lower() not in ("1", "true"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def resolve_recipe(config: PretrainConfig) -> dict[str, Any]:
    """The resolved recipe of ``config``: defaults <- its YAML files <- the scale <- its overrides and shortcuts."""
    overrides = list(config.overrides)
    if config.steps is not None:
        overrides.append(f"train.steps={config.steps}")
    if config.batch_size is not None:
        overrides.append(f"train.batch_size={config.batch_size}")
    if config.data_root is not None:
        overrides.append(f"data.data_root={config.data_root}")
    configs: list[str | Path] = list(config.configs)
    if config.scale:
        if config.scale not in scales():
            raise ConfigError(f"scale {config.scale!r} is not one of {scales()} (training/configs/scale/*.yaml)")
        if not configs:
            raise ConfigError(
                "--scale layers over a recipe: give --config too, e.g. --config training/configs/release.yaml"
            )
        configs.append(CONFIG_DIR / "scale" / f"{config.scale}.yaml")
    cfg = load_config(configs or None, overrides)
    if config.scale:
        cfg["name"] = f"{cfg['name']}-{config.scale}"
    return cfg


def _sources_path(cfg: dict) -> Path:
    p = Path(cfg["data"]["sources"])
    if not p.is_absolute() and not p.is_file():
        p = REPO / p  # relative to the repository
    return p


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Pre-train as ``config`` says; returns what ``summary.json`` holds (written when the run finishes)."""
    cfg = resolve_recipe(config)
    check_pretrain_config(cfg)
    t_cfg, l_cfg = cfg["train"], cfg["loss"]
    out = Path(config.output_dir or Path("runs") / cfg["name"])
    tracker = CSVTracker(out)
    probe_log = CSVTracker(out, "probe.csv")
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(t_cfg["mixed_precision"]),
        gradient_accumulation_steps=int(t_cfg["grad_accum"]),
        log_with=[tracker],
        project_dir=str(out),
    )
    if accelerator.device.type == "cpu":
        torch.set_num_threads(int(t_cfg["threads"]) or max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    set_seed(int(t_cfg["seed"]))
    view_cfg = ViewConfig.from_dict(cfg["views"])

    # ---- data
    data_cfg = load_data_config(_sources_path(cfg), cfg["data"]["data_root"])
    B, accum, nproc = int(t_cfg["batch_size"]), int(t_cfg["grad_accum"]), accelerator.num_processes
    total = int(t_cfg["steps"])
    dataset = UnlabelledWindows(
        data_cfg.scenes,
        cfg["data"]["bands"],
        cfg["data"]["patch_size"],
        length=total * accum * B * nproc,
        seed=int(t_cfg["seed"]),
        max_nodata=float(cfg["data"]["max_nodata"]),
        cross_p=float(cfg["data"]["cross_p"]),
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=B, shuffle=False, drop_last=True, num_workers=int(cfg["data"]["num_workers"])
    )

    # ---- model
    objective, net, key_net = build_pretraining(cfg, dataset)  # measures the normalisation when "auto"
    mean, std = cfg["model"]["normalization"]["mean"], cfg["model"]["normalization"]["std"]
    mem = torch.channels_last if cfg["model"]["channels_last"] else torch.contiguous_format
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(t_cfg["lr"]), weight_decay=float(t_cfg["weight_decay"]))
    net, optimizer = accelerator.prepare(net, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if key_net is not None:
        key_net.to(accelerator.device)
        accelerator.register_for_checkpointing(key_net)
    mean_t = torch.tensor(mean, device=accelerator.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=accelerator.device).view(1, -1, 1, 1)

    # ---- resume
    if config.resume:
        ckpt = latest_checkpoint(out) if config.resume == "latest" else Path(config.resume)
        if ckpt is None or not ckpt.is_dir():
            raise ConfigError(f"--resume: no checkpoint found ({ckpt or out / 'checkpoints'}); run without --resume")
        accelerator.load_state(str(ckpt))
        accelerator.print(f"resumed from {ckpt} at step {state.step}")
        if accelerator.is_main_process:
            tracker.truncate_after(state.step)
            probe_log.truncate_after(state.step)
    dataset.start = state.step * accum * B * nproc  # windows are drawn by index: skip without reading
    loader = accelerator.prepare(loader)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    accelerator.init_trackers(cfg["name"], config={"config": json.dumps(cfg)})

    probe_every = int(t_cfg["probe_every"])
    probe = None
    if probe_every and accelerator.is_main_process:
        probe = ProbeSelector(
            Path(cfg["data"]["data_root"]) / t_cfg["probe_data"],
            cfg["data"]["bands"],
            out / "encoder_best_probe",
            int(t_cfg["probe_max_pixels"]),
            method=t_cfg["probe_split"] or ("cv" if t_cfg["select"] == "probe_cv" else "val"),
        )
        probe.best = state.probe_best or None

    # ---- loop
    stop_at = min(total, config.stop_after) if config.stop_after else total
    start_step = state.step
    bar = tqdm(
        total=stop_at,
        initial=start_step,
        disable=not accelerator.is_local_main_process or not config.progress,
        desc=f"pretrain {cfg['name']}",
        dynamic_ncols=True,
    )
    unwrapped = accelerator.unwrap_model(net)
    net.train()
    if key_net is not None:
        key_net.train()
    losses: list[float] = list(state.recent_losses)  # a resumed run continues the window
    part_sums: dict[str, float] = {}  # the objective's terms, averaged over each logging interval
    n_parts = 0
    micro, acc_loss, t_last, n_last = state.step * accum, 0.0, time.perf_counter(), 0
    t_run = time.perf_counter()
    elapsed0 = state.elapsed
    save_every = int(t_cfg["save_every"])
    for batch in loader:
        if state.step >= stop_at:
            break
        lr = lr_at(state.step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        gen = torch.Generator().manual_seed(_seed_for(t_cfg["seed"], micro, accelerator.process_index))
        rng = random.Random(_seed_for(t_cfg["seed"], micro, accelerator.process_index, 1))
        with accelerator.accumulate(net):
            x = (batch["x"] - mean_t) / std_t * batch["valid"]
            x2 = (batch["x2"] - mean_t) / std_t * batch["valid2"] if "x2" in batch else x
            bp = draw_batch_params(view_cfg, x.shape[1], rng)
            pair = make_views(x, view_cfg, bp, gen, valid=batch["valid"], patches2=x2, valid2=batch.get("valid2"))
            views = torch.cat([pair.view1, pair.view2]).contiguous(memory_format=mem)
            if l_cfg["method"] == "dense":
                loss, parts = objective(net, unwrapped, key_net, pair, views, batch, x, x2, gen, accelerator)
                for name, value in parts.items():
                    part_sums[name] = part_sums.get(name, 0.0) + value
            else:
                assert pair.valid1 is not None and pair.valid2 is not None
                valid = torch.cat([pair.valid1, pair.valid2])
                z = net(views, valid=valid)[:, 0]
                loss = nt_xent(z[:B], z[B:], float(l_cfg["tau"]))
            accelerator.backward(loss)
            if accelerator.sync_gradients and t_cfg["grad_clip"]:
                accelerator.clip_grad_norm_(net.parameters(), float(t_cfg["grad_clip"]))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        acc_loss += float(loss.detach()) / accum
        if not accelerator.sync_gradients:
            continue
        if key_net is not None:
            ema_update(key_net, unwrapped, float(l_cfg["ema"]))
        state.step += 1
        step_loss = float(accelerator.reduce(torch.tensor(acc_loss, device=accelerator.device), "mean"))
        losses.append(step_loss)
        state.recent_losses = losses[-FINAL_WINDOW:]
        acc_loss = 0.0
        n_last += B * accum * nproc
        n_parts += 1
        bar.update(1)
        if state.step % int(t_cfg["log_every"]) == 0 or state.step == stop_at:
            now = time.perf_counter()
            sps = n_last / max(now - t_last, 1e-9)
            state.elapsed = elapsed0 + (now - t_run)
            accelerator.log(
                {
                    "loss": step_loss,
                    "loss_avg": float(np.mean(losses[-int(t_cfg["log_every"]) :])),
                    **{f"loss_{k}": v / max(1, n_parts) for k, v in part_sums.items()},
                    "lr": lr,
                    "samples_per_s": sps,
                    "elapsed_s": state.elapsed,
                },
                step=state.step,
            )
            bar.set_postfix(loss=f"{step_loss:.3f}", pairs_per_s=f"{sps:.1f}")
            t_last, n_last = now, 0
            part_sums, n_parts = {}, 0
        if probe_every and state.step % probe_every == 0:
            if probe is not None:
                key_enc = _plain_copy(key_net.encoder) if key_net is not None else None
                result = probe(_plain_copy(unwrapped.encoder), state.step, key=key_enc)
                probe_log.log({k: v for k, v in result.items() if k != "step"}, step=state.step)
                state.probe_best = dict(probe.best or {})
                bar.set_postfix(probe=f"{100 * result['probe_val_miou']:.1f}")
            accelerator.wait_for_everyone()
        if save_every and state.step % save_every == 0 and state.step < stop_at:
            state.elapsed = elapsed0 + (time.perf_counter() - t_run)
            save_checkpoint(accelerator, out, state.step, int(t_cfg["keep_checkpoints"]))
    bar.close()
    state.elapsed = elapsed0 + (time.perf_counter() - t_run)
    save_checkpoint(accelerator, out, state.step, int(t_cfg["keep_checkpoints"]))
    done_here = state.step - start_step
    window = min(FINAL_WINDOW, len(losses)) or 1
    stats: PretrainResult = {
        "steps": state.step,
        "steps_this_run": done_here,
        "wall_time_s": state.elapsed,
        "samples_per_s": state.step * B * accum * nproc / max(state.elapsed, 1e-9),
        "final_loss": float(np.mean(losses[-window:])) if losses else float("nan"),
        "final_window": window,
        "finished": state.step >= total,
    }
    if state.probe_best:
        stats["probe_best"] = state.probe_best
    if accelerator.is_main_process and state.step >= total:
        enc = _plain_copy(unwrapped.encoder)
        if t_cfg["select"] in ("probe", "probe_cv"):
            enc = EarthEncoder.from_pretrained(out / "encoder_best_probe")
            stats["selected_step"] = state.probe_best["step"]
        enc.config.name = enc.config.name or f"earth-embed-{cfg['name']}"
        enc.config.metadata = card_metadata(
            cfg,
            data_cfg,
            state,
            stats,
            accelerator,
            [str(c) for c in config.configs] + ([f"--scale {config.scale}"] if config.scale else []),
        )
        final = save_pretrained_atomic(enc, out / "encoder")
        (out / "summary.json").write_text(json.dumps(stats, indent=2) + "\n")
        accelerator.print(f"saved encoder to {final}: {json.dumps(stats)}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return stats


def _plain_copy(encoder: torch.nn.Module) -> EarthEncoder:
    """A CPU, contiguous-format copy of the (possibly compiled) encoder, safe to save while training goes on."""
    enc = getattr(encoder, "_orig_mod", encoder)
    return cast(EarthEncoder, copy.deepcopy(enc).to(memory_format=torch.contiguous_format).cpu())
