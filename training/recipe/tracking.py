"""A CSV tracker for Accelerate (``log_with=[CSVTracker(dir)]``): one row per logged step."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker


class CSVTracker(GeneralTracker):
    """Writes ``<dir>/log.csv`` (step + metrics) and ``<dir>/hparams.json``; appends when resuming."""

    name = "csv"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | os.PathLike, filename: str = "log.csv") -> None:
        super().__init__()
        self.dir = Path(logging_dir)
        self.path = self.dir / filename
        self._fields: list[str] | None = None

    @property
    def tracker(self) -> Any:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "hparams.json").write_text(json.dumps(values, indent=2, default=str) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run re-logs them)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(r["step"]) <= step]
        if rows:
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                w.writeheader()
                w.writerows(keep)

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        row = {"step": step, **{k: (float(v) if hasattr(v, "__float__") else v) for k, v in values.items()}}
        if self._fields is None:
            if self.path.is_file() and self.path.stat().st_size > 0:
                with self.path.open(newline="") as f:
                    self._fields = next(csv.reader(f))
            else:
                self._fields = list(row.keys())
                with self.path.open("w", newline="") as f:
                    csv.writer(f).writerow(self._fields)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore").writerow(row)


def read_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a CSVTracker log as floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
