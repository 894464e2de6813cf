"""Agents of a heavy module: loading it imports numpy and makes a ballast of small objects, about
150 MiB in all, as a module that imports large libraries would hold.

numpy alone adds about 13 MiB to a process, half of it its shared libraries' pages, which the
kernel maps from their files, and a thread (OpenBLAS's pool, one thread a core beyond the
first). The ballast stands for the rest: what libraries such as pandas write as they load,
code, functions, dictionaries and strings, in the interpreter's small-object arenas, on pages
of 4 KiB. That is the memory whose page tables a fork copies, and which a child's writes copy.

`TAIAT_BENCH_BALLAST=array` makes the ballast one numpy array of the same size instead, as a
module holding a large array or a model would: numpy asks the kernel to back such an array
with huge pages (2 MiB), and a fork copies one entry for each instead of 512.
`TAIAT_BENCH_BALLAST_MIB` sets its size (default 136).

Importing this module takes about a second and that memory, on purpose: import it only in a
process meant to be that size (the heavy section's supervisors, fork loops and workers).
"""

from __future__ import annotations

import os
import time

import numpy

#: MiB of the ballast, beside numpy's own pages.
BALLAST_MIB = int(os.environ.get("TAIAT_BENCH_BALLAST_MIB", "136"))
#: "objects" (small strings, 4 KiB pages) or "array" (one array, huge pages).
BALLAST_KIND = os.environ.get("TAIAT_BENCH_BALLAST", "objects")
#: A string of 90 characters takes 144 bytes of its arena, and 8 more in the list.
_OBJECT_BYTES = 152


def _ballast() -> object:
    if BALLAST_KIND == "array":
        return numpy.ones(BALLAST_MIB << 20, dtype=numpy.uint8)
    return [f"{i:09d}" * 10 for i in range((BALLAST_MIB << 20) // _OBJECT_BYTES)]


BALLAST = _ballast()


def noop() -> None:
    return None


def stamp() -> float:
    """The wall-clock time at which the job's code began, for enqueue-to-start latency."""
    return time.time()
