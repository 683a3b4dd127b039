"""The change-mask write-ups' shared tables and picks (``training/evaluation/change_tables.py``) reproduce the
results files of the real runs in ``docs/results/`` (OSCD cities, real Sentinel-2 pixels): the same default and
pick counts from the stored folds, the same markdown from the stored figures."""

from __future__ import annotations

import json

import pytest

from training.evaluation.change_tables import most_picked, pct


def _result(repo_root, name: str) -> dict:
    return json.loads((repo_root / "docs" / "results" / f"{name}.json").read_text())


@pytest.mark.parametrize(
    "name, key, held_out",
    [
        ("change_adaptive", "selection", lambda f: f["held_out_f1"][f["pick"]]),
        ("change_believable", "selection", lambda f: f["held_out_f1"][f["pick"]]),
        ("change_floor", "selection", lambda f: f["held_out_f1"]),
        ("change_defaults", "mask_selection", lambda f: f["held_out_value"]),
    ],
)
def test_most_picked_gives_the_stored_default(repo_root, name, key, held_out):
    sel = _result(repo_root, name)[key]
    counts, default = most_picked(sel["folds"], held_out)
    assert dict(counts) == sel["counts"] and default == sel["default"]


def test_a_tie_goes_to_the_higher_held_out_mean():
    folds = [{"pick": "a", "v": 0.2}, {"pick": "b", "v": 0.3}, {"pick": "a", "v": 0.1}, {"pick": "b", "v": 0.1}]
    counts, default = most_picked(folds, lambda f: f["v"])
    assert counts == {"a": 2, "b": 2} and default == "b"  # mean 0.2 against 0.15
    assert most_picked(folds + [{"pick": "a", "v": 0.0}], lambda f: f["v"])[1] == "a"  # more picks win first
    assert pct(0.01234) == "1.23 %"


@pytest.mark.parametrize("name", ["change_adaptive", "change_believable"])
def test_markdown_reproduces_the_stored_tables(repo_root, name):
    """Each city's, self-shift and short-term pair's row (``share_rows``), in the order each write-up gives them."""
    import importlib

    result = _result(repo_root, name)
    markdown = importlib.import_module(f"training.experiments.{name}").markdown
    assert markdown(result) == result["markdown"]
    assert result["markdown"].count("date 1 against itself moved 0.5 px | 0 |") == len(result["cities"])
