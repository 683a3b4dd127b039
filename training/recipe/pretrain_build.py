"""What ``training/pretrain.py`` trains, built from a resolved config: the objective, the query network and
its EMA key network.

``model.normalization: auto`` is measured here, on windows of the pre-training data (items disjoint from
training), and written back into the config, so the saved encoder carries the statistics it was trained with.
"""

from __future__ import annotations

from typing import Any

import torch

from earth_embed import EarthEncoder
from earth_embed.errors import ConfigError
from training.data.unlabelled import UnlabelledWindows, band_moments
from training.evaluation.features import STACK_FEATURES
from training.recipe.losses import pca_whitening
from training.recipe.model import PretrainNet, make_key_net
from training.recipe.objective import DenseObjective


def measure_normalization(cfg: dict[str, Any], dataset: UnlabelledWindows) -> None:
    """Replace ``model.normalization: auto`` by the per-band mean, std and band correlation of the data."""
    m_cfg = cfg["model"]
    if m_cfg["normalization"] != "auto":
        return
    mean, std, corr = band_moments(dataset, int(m_cfg["stats_windows"]))
    m_cfg["normalization"] = {
        "mean": mean,
        "std": std,
        "correlation": corr,
        "measured_on_windows": int(m_cfg["stats_windows"]),
    }


def recon_whitening(cfg: dict[str, Any]) -> torch.Tensor | None:
    """The band space the reconstruction target is scored in: PCA-whitened bands, the identity, or None (no target)."""
    l_cfg, norm = cfg["loss"], cfg["model"]["normalization"]
    if not (float(l_cfg["recon_weight"]) > 0 and l_cfg["recon_target"] == "bands"):
        return None
    if "correlation" not in norm:
        raise ConfigError("loss.recon_weight > 0 needs model.normalization: auto (it measures the band correlation)")
    if not l_cfg["recon_whiten"]:
        return torch.eye(len(norm["mean"]))
    return pca_whitening(torch.tensor(norm["correlation"]))


def initial_encoder(cfg: dict[str, Any]) -> EarthEncoder:
    """``model.init_from``'s encoder, checked against the config; its normalisation replaces the measured one.

    The weights were trained on inputs normalised with the encoder's own mean and std, so the run keeps them
    (the measured band correlation, which does not depend on them, stays for the reconstruction target).
    """
    m_cfg = cfg["model"]
    encoder = EarthEncoder.from_pretrained(str(m_cfg["init_from"]))
    want = {"architecture": m_cfg["architecture"], "bands": list(cfg["data"]["bands"]), "embed_dim": m_cfg["embed_dim"]}
    have = {"architecture": encoder.config.architecture, "bands": encoder.bands, "embed_dim": encoder.embed_dim}
    wrong = [k for k in want if want[k] != have[k]]
    if wrong:
        raise ConfigError(
            f"model.init_from {m_cfg['init_from']}: its {', '.join(f'{k} {have[k]!r}' for k in wrong)} differ from the "
            f"config's {', '.join(f'{want[k]!r}' for k in wrong)}; set those keys to the encoder's values"
        )
    norm = encoder.config.normalization
    m_cfg["normalization"] = {**m_cfg["normalization"], "mean": list(norm.mean), "std": list(norm.std)}
    return encoder


def build_pretraining(
    cfg: dict[str, Any], dataset: UnlabelledWindows
) -> tuple[DenseObjective, PretrainNet, PretrainNet | None]:
    """(objective, query network, EMA key network or None) for a resolved pre-training config."""
    measure_normalization(cfg, dataset)
    m_cfg, l_cfg = cfg["model"], cfg["loss"]
    mean, std = m_cfg["normalization"]["mean"], m_cfg["normalization"]["std"]
    objective = DenseObjective(l_cfg, recon_whitening(cfg))
    if m_cfg["init_from"]:
        encoder = initial_encoder(cfg)
    else:
        encoder = EarthEncoder.new(
            m_cfg["architecture"], bands=cfg["data"]["bands"], embed_dim=int(m_cfg["embed_dim"]), mean=mean, std=std
        )
    recon_dim = len(mean) * (STACK_FEATURES if l_cfg["recon_target"] == "stack" else 1)
    recon_dim = recon_dim if float(l_cfg["recon_weight"]) > 0 else 0
    net = PretrainNet(encoder, int(l_cfg["proj_dim"]), int(l_cfg["proj_hidden"]), recon_dim, int(l_cfg["cross_pool"]))
    net = net.to(memory_format=torch.channels_last if m_cfg["channels_last"] else torch.contiguous_format)
    key_net = make_key_net(net) if (l_cfg["method"] == "dense" and l_cfg["key_encoder"] == "ema") else None
    if m_cfg["compile"]:
        net.encoder = torch.compile(net.encoder)  # type: ignore[assignment]
        if key_net is not None:
            key_net.encoder = torch.compile(key_net.encoder)  # type: ignore[assignment]
    return objective, net, key_net
