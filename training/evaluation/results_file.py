"""Writing an experiment's results: the JSON whole or not at all, its markdown table, the command that made it and
how long it took (:class:`RunClock`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def write_json(path: str | Path, obj: Any, indent: int = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent) + "\n")
    tmp.replace(path)
    return path


def command_line(script: str, argv: Sequence[str]) -> str:
    """The shell command that reproduces a run: ``python <script> <argv...>``, each argument quoted."""
    return f"python {script} " + " ".join(shlex.quote(a) for a in argv)


@dataclass
class RunClock:
    """Wall time, CPU time and the 5-minute load average at a run's start (when it is made)."""

    wall: float = field(default_factory=time.time)
    cpu: float = field(default_factory=time.process_time)
    load: float = field(default_factory=lambda: os.getloadavg()[1])

    def meta(self, threads: int, script: str, argv: Sequence[str]) -> dict[str, Any]:
        """What a results file records of the run so far: wall and CPU seconds, the load average at the start and
        now, ``threads``, today's date and the command (:func:`command_line`)."""
        return {
            "seconds": round(time.time() - self.wall, 1),
            "cpu_seconds": round(time.process_time() - self.cpu, 1),
            "load_average_5min": [round(self.load, 1), round(os.getloadavg()[1], 1)],
            "threads": threads,
            "date": _dt.date.today().isoformat(),
            "command": command_line(script, argv),
        }


def write_report(path: str | Path, result: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Add ``result["markdown"] = markdown(result)``, write the JSON (whole or not at all), print the table."""
    result["markdown"] = markdown(result)
    write_json(path, result)
    print(result["markdown"])
    return result


def write_results(path: str | Path, result: dict[str, Any], md: str | Path = "") -> dict[str, Any]:
    """Write a result that already holds its ``markdown`` table: the JSON (whole or not at all), the table to
    ``md`` when one is given, and the table to stdout."""
    write_json(path, result)
    if md:
        Path(md).write_text(result["markdown"] + "\n")
    print(result["markdown"])
    return result
