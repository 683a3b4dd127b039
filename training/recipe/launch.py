"""Make ``accelerate launch --cpu --num_processes N`` start N processes on one machine.

Accelerate's simple launcher starts ONE process for ``--cpu`` unless an MPI hostfile is configured
(huggingface/accelerate#2741): it only exports ``ACCELERATE_USE_CPU`` and, for N > 1,
``MASTER_ADDR``/``MASTER_PORT``. :func:`respawn_cpu_ranks` detects that case, reads N from the
``accelerate launch`` command line, and re-runs the script as N ranks with ``torch.distributed.run``
(each rank then sees ``WORLD_SIZE``/``RANK`` and Accelerate uses the gloo backend).
``EARTH_EMBED_CPU_PROCESSES=N`` gives N explicitly.
"""

from __future__ import annotations

import os
import subprocess
import sys


def _str_true(v: str | None) -> bool:
    return str(v).lower() in ("1", "true", "yes")


def _parent_num_processes() -> int:
    try:
        import psutil

        cmd = psutil.Process(os.getppid()).cmdline()
    except Exception:  # no psutil or no access: keep one process
        return 1
    if not any("accelerate" in c for c in cmd[:3]):
        return 1
    for i, c in enumerate(cmd):
        if c in ("--num_processes", "--num-processes") and i + 1 < len(cmd):
            return int(cmd[i + 1])
        if c.startswith(("--num_processes=", "--num-processes=")):
            return int(c.split("=", 1)[1])
    return 1


def respawn_cpu_ranks(script: str) -> None:
    """Re-run ``script`` with the current arguments as N CPU ranks if needed; exits with their status."""
    env = os.environ
    if not _str_true(env.get("ACCELERATE_USE_CPU")):
        return
    if any(k in env for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")):
        return  # already a rank of a distributed launch
    n = int(env.get("EARTH_EMBED_CPU_PROCESSES", "0")) or (_parent_num_processes() if "MASTER_ADDR" in env else 1)
    if n <= 1:
        return
    child_env = dict(env)
    child_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        script,
        *sys.argv[1:],
    ]
    print(f"[earth-embed] starting {n} CPU ranks: {' '.join(cmd)}", file=sys.stderr, flush=True)
    sys.exit(subprocess.call(cmd, env=child_env))
