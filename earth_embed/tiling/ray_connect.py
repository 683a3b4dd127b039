"""Ray preflight: join (or start) Ray and prove its workers can run earth-embed before anything is written.

A wrong cluster address made ``ray.init`` retry for many minutes. :func:`ray_session` fails in seconds
instead, with a message naming the problem and the fix:

1. ``ray://HOST:PORT`` (Ray Client) is refused with the alternatives: Ray Data, which the engine runs on,
   does not work over Ray Client (ray-project/ray#48682, measured with Ray 2.60: the run fails in the
   middle, after ``ray[client]`` is installed); run on a cluster node (``auto``/``HEAD:6379``) or as a Ray Job.
2. ``HOST:PORT``: a TCP connection to the port must open within the timeout.
3. Joining runs in a child process first, killed after the timeout: a port that answers but is not Ray
   cannot hang the run.
4. A task on the cluster's workers must import ``earth_embed``, ``torch`` and ``zarr`` (same earth-embed
   version as here), within the timeout (longer when a ``runtime_env`` installs packages).

The timeout (seconds) is ``timeout=``, else ``$EARTH_EMBED_RAY_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`.
Without an address (and no ``$RAY_ADDRESS``) a local Ray is started for the run and stopped after it; a
Ray already initialised in this process is used as it is (and left running).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import RasterInputError

#: Seconds to reach a cluster (TCP, then joining it).
DEFAULT_TIMEOUT = 10.0
#: Extra seconds the joining child process gets to import Ray.
IMPORT_SECONDS = 10.0
_CHECKED: dict[str, dict[str, str]] = {}  # job and runtime_env -> versions found, checked once per job
_JOIN = """
import json, sys
import ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level="ERROR")
print(json.dumps({k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}))
ray.shutdown()
"""


def connect_timeout(value: float | None = None) -> float:
    """The preflight timeout in seconds (argument > ``$EARTH_EMBED_RAY_TIMEOUT`` > default)."""
    if value is None:
        env = os.environ.get("EARTH_EMBED_RAY_TIMEOUT")
        try:
            value = float(env) if env else DEFAULT_TIMEOUT
        except ValueError:
            raise RasterInputError(
                f"EARTH_EMBED_RAY_TIMEOUT={env!r} is not a number of seconds; set it to e.g. 15."
            ) from None
    if value <= 0:
        raise RasterInputError(f"The Ray timeout must be > 0 s (got {value}); e.g. --ray-timeout 15.")
    return float(value)


def split_address(address: str) -> tuple[bool, str, int | None]:
    """``(client, host, port)`` of ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT``; port None for ``auto``."""
    client = address.startswith("ray://")
    rest = address[len("ray://") :] if client else address
    if rest == "auto" and not client:
        return False, "auto", None
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RasterInputError(
            f"--address {address!r} is not a Ray address; use ray://HOST:10001 (Ray Client), HOST:6379 (the head "
            "node's GCS, from a machine of the cluster) or auto."
        )
    return client, host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float) -> None:
    """Steps 1 and 2 of the module doc: not Ray Client, then a TCP connection to the port."""
    client, host, port = split_address(address)
    if client:
        raise RasterInputError(
            f"--address {address} uses Ray Client, and Ray Data (which the ray engine runs on) does not work over "
            "Ray Client (ray-project/ray#48682; it needs ray[client], and then fails in the middle of the run). "
            "Run embed-region on a node of the cluster with --address auto (or HEAD:6379), e.g. as a Ray Job: "
            "ray job submit --address http://HEAD:8265 -- earth-embed embed-region SCENES OUT.zarr --engine ray "
            "--address auto (the store's folder must be shared by the nodes)."
        )
    if port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        why = "timed out" if isinstance(err, socket.timeout) else (err.strerror or str(err))
        raise RasterInputError(
            f"Cannot reach the Ray cluster at {address} ({why} within {timeout:g} s). Check the host and port "
            "(Ray Client listens on 10001, the GCS on 6379) and that the cluster is running (ray status on its "
            "head node); --ray-timeout sets how long to wait."
        ) from err


def join_in_child(address: str, timeout: float) -> dict[str, float]:
    """Step 3: join the cluster from a child process, killed after ``timeout`` (+ import time)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _JOIN, address],
            capture_output=True,
            text=True,
            timeout=timeout + IMPORT_SECONDS,
            env={**os.environ, "RAY_ADDRESS": ""},
        )
    except subprocess.TimeoutExpired:
        raise RasterInputError(
            f"Joining the Ray cluster at {address} did not finish within {timeout + IMPORT_SECONDS:g} s although its "
            "port answers: is it a Ray head node of the same Ray version? Check the address; --ray-timeout sets "
            "how long to wait."
        ) from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        auth = next((line for line in lines if "AuthenticationError" in line or "InvalidAuthToken" in line), None)
        if auth is not None:
            raise RasterInputError(
                f"The Ray cluster at {address} refused this machine's credentials ({auth.split(': ', 1)[-1][:200]}). "
                "It uses token authentication: set RAY_AUTH_MODE=token and give its token (~/.ray/auth_token, "
                "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)."
            )
        last = lines[-1].rstrip(".") if lines else "ray.init failed"
        raise RasterInputError(
            f"Cannot join the Ray cluster at {address}: {last}. Check the address and that the cluster runs the "
            "same Ray version as here."
        )
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def check_workers(ray: Any, timeout: float, runtime_env: dict | None = None) -> dict[str, str]:
    """Step 4: a task on the cluster imports what the run needs; returns the versions it found."""
    from ..version import __version__

    def probe() -> dict[str, str]:  # a closure: shipped by value, so unpickling needs no earth_embed
        import torch
        import zarr

        from earth_embed.version import __version__ as version  # imports the package itself first

        return {"earth_embed": version, "torch": torch.__version__, "zarr": zarr.__version__}

    key = json.dumps([ray.get_runtime_context().get_job_id(), runtime_env], sort_keys=True, default=str)
    if key in _CHECKED:
        return _CHECKED[key]
    options: dict[str, Any] = {"num_cpus": 0, "max_retries": 0}
    if runtime_env:
        options["runtime_env"] = runtime_env
    wait = timeout if not runtime_env else max(timeout, 120.0)  # a runtime_env may install packages first
    try:
        found = ray.get(ray.remote(probe).options(**options).remote(), timeout=wait)
    except ray.exceptions.GetTimeoutError:
        raise RasterInputError(
            f"The Ray cluster did not run a test task within {wait:g} s (no free worker, or its runtime_env is "
            "still installing); check ray status on the cluster, or raise --ray-timeout."
        ) from None
    except Exception as err:  # RayTaskError wraps the worker's ImportError
        cause = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise RasterInputError(
            f"The Ray cluster's workers cannot run earth-embed ({cause}). Install the same earth-embed as here "
            f'(version {__version__}) on every node: pip install "earth-embed[ray]=={__version__}", or pass a '
            'runtime_env that installs it (--ray-env \'{"pip": ["earth-embed[ray]"]}\').'
        ) from None
    if found.get("earth_embed") != __version__:
        raise RasterInputError(
            f"The Ray cluster's workers run earth-embed {found.get('earth_embed')}, this machine {__version__}; "
            f'install the same version on every node (pip install "earth-embed[ray]=={__version__}").'
        )
    _CHECKED[key] = found
    return found


@contextlib.contextmanager
def ray_session(
    address: str | None = None, timeout: float | None = None, runtime_env: dict | None = None
) -> Iterator[Any]:
    """Ray, joined or started and checked (see the module doc), for the duration of the ``with`` block."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RasterInputError(
            f'The ray engine needs Ray Data ({err}); install it with pip install "earth-embed[ray]".'
        ) from err
    seconds = connect_timeout(timeout)
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_reachable(address, seconds)
            join_in_child(address, seconds)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise RasterInputError(
                f"Cannot start or join Ray (address={address!r}): {err}. Check the address (ray://HOST:10001, "
                "HOST:6379 or auto) or leave it out to run Ray on this machine."
            ) from err
        started = True
    try:
        check_workers(ray, seconds, runtime_env)
        yield ray
    finally:
        if started:
            ray.shutdown()


__all__ = ["DEFAULT_TIMEOUT", "check_reachable", "check_workers", "connect_timeout", "join_in_child", "ray_session"]
