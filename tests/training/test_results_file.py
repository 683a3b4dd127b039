"""What a results file records of its run (``RunClock.meta``): the keys the write-ups read, in the order the change
experiments' results files hold them, and the command quoted so that it can be pasted into a shell."""

from __future__ import annotations

import time

from training.evaluation.results_file import RunClock


def test_run_clock_records_the_run():
    clock = RunClock()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.2:  # CPU work the clock must count
        pass
    meta = clock.meta(2, "training/experiments/change_floor.py", ["--cities", "bercy", "a b"])
    assert list(meta) == ["seconds", "cpu_seconds", "load_average_5min", "threads", "date", "command"]
    assert meta["cpu_seconds"] >= 0.2 and meta["seconds"] >= 0.2 and meta["threads"] == 2
    assert len(meta["load_average_5min"]) == 2 and len(meta["date"]) == 10
    assert meta["command"] == "python training/experiments/change_floor.py --cities bercy 'a b'"
