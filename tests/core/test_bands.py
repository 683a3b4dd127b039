"""The Sentinel-2 band table, aliases, selection by name and the baseline offset."""

from __future__ import annotations

import pytest

from earth_embed.bands import (
    ALL_BANDS,
    L2A_BANDS,
    RELEASE_BANDS,
    S2_BANDS,
    canonical_band_name,
    dn_offset_for_baseline,
    select_bands,
)
from earth_embed.errors import BandError


def test_table_matches_the_sentinel2_spec():
    assert len(ALL_BANDS) == 13 and len(L2A_BANDS) == 12 and "B10" not in L2A_BANDS
    assert S2_BANDS["B8A"].wavelength_nm == 865 and S2_BANDS["B8A"].resolution_m == 20
    assert [b for b in ALL_BANDS if S2_BANDS[b].resolution_m == 10] == ["B02", "B03", "B04", "B08"]
    assert [b for b in ALL_BANDS if S2_BANDS[b].resolution_m == 60] == ["B01", "B09", "B10"]
    assert all(S2_BANDS[b].resolution_m in (10, 20) for b in RELEASE_BANDS) and len(RELEASE_BANDS) == 10


@pytest.mark.parametrize(
    "alias,name",
    [
        ("blue", "B02"),
        ("Red", "B04"),
        ("nir", "B08"),
        ("swir16", "B11"),
        ("swir22", "B12"),
        ("b8a", "B8A"),
        ("B8a", "B8A"),
        ("B2", "B02"),
        ("b12", "B12"),
        ("cirrus", "B10"),
        ("B01", "B01"),
    ],
)
def test_aliases(alias, name):
    assert canonical_band_name(alias) == name


def test_unknown_band_names_the_fix():
    with pytest.raises(BandError, match="Unknown Sentinel-2 band name 'B13'"):
        canonical_band_name("B13")


def test_select_reorders_and_subsets():
    available = ["B02", "B03", "B04", "B08", "B11"]
    assert select_bands(available, ["nir", "red", "green"]) == [3, 2, 1]
    assert select_bands(available, ["B11"]) == [4]


def test_select_names_every_missing_band():
    with pytest.raises(BandError) as err:
        select_bands(["B02", "B03"], ["B02", "B05", "B12"])
    assert (
        "B05" in str(err.value)
        and "B12" in str(err.value)
        and "B02" not in str(err.value).split("Missing")[1].split(":")[0]
    )


def test_duplicates_refused():
    with pytest.raises(BandError, match="more than once"):
        select_bands(["B02", "blue"], ["B02"])


@pytest.mark.parametrize(
    "baseline,offset",
    [("04.00", -1000.0), ("N0400", -1000.0), ("05.09", -1000.0), ("02.09", 0.0), ("N0206", 0.0), (None, 0.0)],
)
def test_baseline_offset(baseline, offset):
    assert dn_offset_for_baseline(baseline) == offset


def test_baseline_n9999_must_be_explicit():
    with pytest.raises(BandError, match="pass dn_offset explicitly"):
        dn_offset_for_baseline("N9999")
