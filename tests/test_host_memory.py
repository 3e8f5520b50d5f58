"""genart_jax.host_memory: freed host memory is reused instead of page-faulted in again."""

import json
import os
import subprocess
import sys

import pytest

from genart_jax import host_memory

pytestmark = pytest.mark.skipif(host_memory._glibc() is None, reason="needs glibc malloc")

# Allocates, touches and frees a 64 MiB block from a fresh thread (a thread gets its own malloc
# arena, as XLA's do) five times; prints the minor page faults of the last four rounds.
_PROBE = """
import ctypes, json, resource, sys, threading
from genart_jax import host_memory
mode = sys.argv[1]
kept = {"keep": host_memory.keep_freed_memory,
        "env": host_memory.keep_freed_memory_unless_opted_out}.get(mode, lambda: False)()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 64 << 20
def one_round():
    p = libc.malloc(size)
    libc.memset(p, 1, size)
    libc.free(p)
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = threading.Thread(target=one_round)
    t.start()
    t.join()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "is_kept": host_memory.is_kept(), "faults": sum(faults[1:])}))
"""


def _probe(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True,
                         text=True, env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_kept_memory_is_reused_without_page_faults():
    pages = 4 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")  # four rounds of 64 MiB
    default = _probe("default")
    kept = _probe("keep")
    assert not default["kept"] and kept["kept"] and kept["is_kept"]
    assert default["faults"] > pages // 2  # glibc maps and unmaps the block every round
    assert kept["faults"] < pages // 20  # the first round's pages are reused


def test_the_environment_can_opt_out():
    opted_out = _probe("env", GENART_KEEP_HOST_MEMORY="0")
    assert not opted_out["kept"] and not opted_out["is_kept"]
    assert _probe("env")["kept"]
