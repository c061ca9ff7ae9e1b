"""gmvol.heap really stops the page faults of re-allocating large blocks (in a fresh process, so
that malloc's settings elsewhere in the test session do not matter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, numpy as np
from gmvol.heap import retain_freed_memory

def faults_per_allocation():
    for _ in range(2):
        block = np.ones(64 << 20, dtype=np.uint8); del block
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        block = np.ones(64 << 20, dtype=np.uint8); del block
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5

before = faults_per_allocation()
applied = retain_freed_memory()
print(before, applied, faults_per_allocation())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, applied, after = done.stdout.split()
    assert applied == "True"
    assert float(before) > 0  # a 64 MiB block is mmapped afresh, and faulted in, each time
    assert float(after) < float(before) / 10
