"""How work runs on this machine: cores, worker processes, torch threads, progress reports.

One policy for all of musicidx, so that a build, a query, the server and pretraining agree:

* **worker processes**: one per usable core by default (:func:`default_workers`) -- rendering
  and the CQT of one file are single-threaded, so a pool of processes is how they use the cores;
* **torch threads**: a process that is one of such a pool uses one thread (the pool already fills
  the cores; more threads would only oversubscribe them); a process that trains or embeds on its
  own -- the build's fit, a :class:`~musicidx.query.engine.Searcher`, pretraining -- uses every
  usable core, or the number it was told (``pretrain --workers``, a Ray embedding actor that
  mirrors its driver so the vectors are the driver's to the bit).  See :func:`set_torch_threads`.

"Usable" means the process's CPU affinity where the system has one: a container or ``taskset``
may allow fewer cores than the machine has, and ``os.cpu_count()`` would overcount them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

#: ``progress(stage, done, total)``: a long job reports each stage (for instance "features",
#: "training", "indexing", "export", "views") as it goes; the CLI draws it, the library never prints.
Progress = Callable[[str, int, int], None]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, else the machine's count; at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Worker processes when the caller names none: one per usable core."""
    return usable_cores()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the number there was."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_torch_threads(threads: int | None = None, *, worker: bool = False) -> int:
    """Set torch's intra-op threads by the policy of this module and return the number set.

    ``worker``: this process is one of a pool of one process per core (feature extraction, the
    server's workers, pretraining's renderers): one thread.  Otherwise ``threads`` when given
    (at least 1), else every usable core."""
    import torch

    n = 1 if worker else max(1, threads) if threads is not None else usable_cores()
    torch.set_num_threads(n)
    return n
