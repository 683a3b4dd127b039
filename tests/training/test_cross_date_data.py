"""The cross-date pre-training data never pairs the two dates of a city that has (or may have) a change map."""

from __future__ import annotations

import copy

import pytest

from earth_embed.errors import ConfigError
from tests.training.helpers import CONFIGS
from training.data.unlabelled import UnlabelledWindows, load_data_config
from training.recipe.config import DEFAULTS, check_pretrain_config, deep_update
from training.recipe.pretrain_build import initial_encoder

#: OSCD's original test split: no change map exists for these cities, so their dates may be paired.
PAIRABLE_OSCD = {
    "brasilia",
    "chongqing",
    "dubai",
    "lasvegas",
    "milano",
    "montpellier",
    "norcia",
    "rio",
    "saclay_w",
    "valencia",
}


def test_only_cities_without_change_maps_are_seen_at_two_dates(shared_data):
    cfg = load_data_config(CONFIGS / "data" / "pretrain-cross-date.yaml", shared_data)
    labelled = {p.name for p in (shared_data / "labelled" / "oscd-change").iterdir() if p.is_dir()}
    assert len(labelled) == 10 and not labelled & PAIRABLE_OSCD
    ds = UnlabelledWindows(cfg.scenes, DEFAULTS["data"]["bands"], 96, length=8, cross_p=1.0)
    paired = {cfg.scenes[k].path.name for k in range(len(cfg.scenes)) if ds.partners[k]}
    oscd = {s.path.name for s in cfg.scenes if s.path.parent.name in ("oscd", "oscd-date1")}
    assert len(oscd) == 24
    assert paired - {"20200604_L1C", "20200604_L2A", "20200813_L2A", "20200823_L1C"} == PAIRABLE_OSCD
    for city in oscd - PAIRABLE_OSCD:  # every other city (the 10 labelled ones among them): its later date only
        scenes = [s for s in cfg.scenes if s.path.name == city]
        assert [s.path.parent.name for s in scenes] == ["oscd"] and scenes[0].group is None
    assert sum(s.weight for s in cfg.scenes) == pytest.approx(1.0)


def test_a_list_entry_that_matches_nothing_is_named(tmp_path, shared_data):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(
        "sources:\n  - name: two\n    scenes: [unlabelled/oscd/rio, unlabelled/oscd/atlantis]\n"
        "    level: L1C\n    dn_offset: 0\n"
    )
    with pytest.raises(ConfigError, match="unlabelled/oscd/atlantis"):
        load_data_config(cfg, shared_data)


def test_init_from_must_match_the_config(repo_root):
    cfg = deep_update(
        copy.deepcopy(DEFAULTS),
        {"model": {"init_from": str(repo_root / "models" / "earth-embed-s2-unet-r18s16"), "embed_dim": 32}},
    )
    with pytest.raises(ConfigError, match="embed_dim 64.*set those keys"):
        initial_encoder(cfg)
    cfg["model"].update(embed_dim=64, architecture="unet-resnet18-s16-ls", normalization={"correlation": [[1.0]]})
    encoder = initial_encoder(cfg)  # the release's own normalisation replaces the measured mean and std
    assert cfg["model"]["normalization"]["mean"] == encoder.config.normalization.mean
    assert cfg["model"]["normalization"]["correlation"] == [[1.0]]


def test_cross_pool_must_be_odd():
    cfg = deep_update(copy.deepcopy(DEFAULTS), {"loss": {"cross_pool": 4}})
    with pytest.raises(ConfigError, match="cross_pool must be an odd"):
        check_pretrain_config(cfg)
