"""Run-folder bookkeeping of a pre-training run: progress state, atomic checkpoints, model-card metadata."""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator


class TrainState:
    """Progress saved with ``save_state``: optimizer steps done and training seconds so far."""

    def __init__(self) -> None:
        self.step = 0
        self.elapsed = 0.0
        self.probe_best: dict = {}  # {"step", "probe_val_miou", ...} of the best probe so far
        # the last FINAL_WINDOW step losses, so a resumed run's "final loss" averages the same steps as an
        # uninterrupted run's (not only those after the resume)
        self.recent_losses: list[float] = []

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "probe_best": dict(self.probe_best),
            "recent_losses": list(self.recent_losses),
        }

    def load_state_dict(self, d: dict) -> None:
        self.step, self.elapsed = int(d["step"]), float(d["elapsed"])
        self.probe_best = dict(d.get("probe_best", {}))
        self.recent_losses = [float(v) for v in d.get("recent_losses", [])]


#: Steps averaged into the reported final loss.
FINAL_WINDOW = 50


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    return ckpts[-1] if ckpts else None


def save_checkpoint(accelerator: Accelerator, out: Path, step: int, keep: int) -> None:
    final = out / "checkpoints" / f"step_{step:07d}"
    tmp = out / "checkpoints" / f".tmp_step_{step:07d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # never a half-written checkpoint under its final name
        for old in sorted((out / "checkpoints").glob("step_*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def card_metadata(
    cfg: dict,
    data_cfg,
    state: TrainState,
    stats: Mapping[str, Any],
    accelerator: Accelerator,
    config_path: list[str] | None,
) -> dict:
    data_txt = "; ".join(
        f"{s['name']}: excluded ({s['excluded']})"
        if "excluded" in s
        else f"{s['name']} ({s['scenes']} scene(s), {s['level']}, DN offset {s['dn_offset']:g}, weight {s['weight']:.3f})"
        for s in data_cfg.summary
    )
    t, loss = cfg["train"], cfg["loss"]
    hw = f"{accelerator.num_processes} x {accelerator.device.type}"
    if accelerator.device.type == "cuda":
        hw += f" ({torch.cuda.get_device_name(accelerator.device)})"
    return {
        "training": {
            "recipe": f"earth-embed training/pretrain.py, Embedding Earth {loss['method']} contrastive "
            f"(tau {loss['tau']}, {loss['points']} points/view, key encoder {loss['key_encoder']} "
            f"{loss['ema'] if loss['key_encoder'] == 'ema' else ''})".replace(" )", ")"),
            "config": f"{' + '.join(config_path) if config_path else '(defaults)'} (name {cfg['name']})",
            "data": data_txt,
            "steps": state.step,
            **({"started from": str(cfg["model"]["init_from"])} if cfg["model"].get("init_from") else {}),
            "batch": f"{t['batch_size']} x {t['grad_accum']} accumulation x {accelerator.num_processes} processes",
            "patch / views": f"{cfg['data']['patch_size']} px windows, views {cfg['views']['out_sizes']} px",
            "wall time": f"{state.elapsed / 60:.1f} min",
            "throughput": f"{stats['samples_per_s']:.2f} view pairs/s",
            "final loss": f"{stats['final_loss']:.4f} (mean of the last {stats['final_window']} steps)",
            "hardware": hw,
            "date": _dt.date.today().isoformat(),
            **(
                {
                    "model selection": f"step {stats['selected_step']} of {state.step}, best linear probe (mIoU "
                    f"{100 * state.probe_best['probe_val_miou']:.1f}, "
                    f"{'EMA key' if state.probe_best.get('selected_is_key') else 'query'} encoder) "
                    f"{'by 3-fold spatial CV inside the training block' if t['select'] == 'probe_cv' else 'on the validation block'} of "
                    f"{t['probe_data']} (probed every {t['probe_every']} steps)"
                }
                if "selected_step" in stats
                else {}
            ),
        },
        "training_config": cfg,
        "attribution": list(data_cfg.attribution),
    }
