"""Start method for the worker processes of the tools and the synthetic-data generator.

``fork`` copies the whole parent, including locks held at that instant by its other threads (PyTorch's OpenMP pool,
FFmpeg's decoder threads, decord's prefetch threads, logging handlers); a forked child that needs such a lock waits
forever. A pool created from a process that has already decoded or trained (a test session, ``train.py`` generating
data after building a model) can therefore hang at random; the Python documentation warns against forking a
multi-threaded process (``os.fork``, 3.12+ ``DeprecationWarning``). ``forkserver`` forks from a small server process
that was started clean and never runs threads, so the workers start from a single-threaded state. The server imports
the worker modules once (:data:`WORKER_MODULES`, a few seconds, once per process; importing them starts no thread),
so later pools start at once. Where forkserver does not exist (Windows, some macOS builds), ``spawn``.

A worker function, its arguments and a pool initializer's arguments are pickled under both methods: pass module-level
functions and plain values (paths, dataclasses), never open decoders.
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.context import BaseContext

# Every module whose functions run in these pools: imported once by the fork server, inherited by each worker.
WORKER_MODULES = (
    "rsa_lightning.data.synthetic",
    "rsa_lightning.tools.extract_frames",
    "rsa_lightning.tools.reencode_videos",
    "rsa_lightning.tools.scan_videos",
)


def worker_context() -> BaseContext:
    """The ``multiprocessing`` context for worker pools: ``forkserver`` where available, else ``spawn``.

    Use as ``ProcessPoolExecutor(n, mp_context=worker_context())`` or ``worker_context().Pool(n, init, initargs)``.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # takes effect when the server starts (first pool). A tool run as the program (``python -m <tool>``) is run again
    # as ``__mp_main__`` in every worker; had the server imported it under its name (itself, or through a tool that
    # imports it: reencode_videos -> extract_frames -> scan_videos), runpy warned once per worker. So then only the
    # worker modules the tool itself imported are preloaded (none of them imports it).
    main = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    if main in WORKER_MODULES:
        preload = [name for name in WORKER_MODULES if name != main and name in sys.modules]
    else:
        preload = list(WORKER_MODULES)
    context.set_forkserver_preload(preload)
    return context
