"""The ablation's table reads the committed results of two real 120-step runs (the misregistration write-up's
baseline and arm) as that write-up states them, and applies the reading rule of change_ablation.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.evaluation.change_ablation_report import main, verdict

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_table_reads_the_misregistration_runs_as_their_write_up():
    base, arm = RESULTS / "change_misregister_base", RESULTS / "change_misregister_arm"
    table = main(["--arm", "baseline", str(base), "--arm", "jitter", str(arm)]).splitlines()
    assert len(table) == 4
    # change_misregister.md: S 0.159 -> 0.155 (-2.6 %), A 15.4 -> 15.8, CVA AP 11.4 -> 12.4, mask F1 19.0 -> 22.1
    assert table[2].startswith("| baseline | 0.159 |") and "| 11.4 / 79.6 | 19.0 | - |" in table[2]
    assert "| 0.155 (-2.6 %) |" in table[3] and "| 15.8 (+0.3) |" in table[3]
    assert table[3].endswith("| 12.4 / 79.2 | 22.1 | no effect shown |")


def test_missing_result_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--arm", "baseline", str(tmp_path / "nothing")])


@pytest.mark.parametrize(
    ("ap", "s", "expected"),
    [
        (0.156, 0.140, "removes change sensitivity"),  # S -12 %
        (0.160, 0.159, "removes change sensitivity"),  # A +0.6 point
        (0.160, 0.140, "removes change sensitivity (both measures)"),
        (0.148, 0.159, "helps change sensitivity"),  # A -0.6 point
        (0.154, 0.180, "helps change sensitivity"),  # S +13 %
        (0.160, 0.180, "mixed: removes by A"),
        (0.148, 0.140, "mixed: helps by A"),
        (0.157, 0.150, "no effect shown"),
    ],
)
def test_reading_rule(ap, s, expected):
    assert verdict({"A": ap, "S": s}, {"A": 0.154, "S": 0.159}) == expected
