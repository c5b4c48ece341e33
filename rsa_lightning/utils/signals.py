"""DataLoader workers that outlive a stop signal sent to the whole job, so the main process can save and stop.

A cluster stops a job by signalling every one of its processes (SLURM signals all processes of a job step, a
``kill -TERM -<pgid>`` the process group), DataLoader workers included. PyTorch's workers die on a SIGTERM that does
not come from their parent (``torch/csrc/DataLoader.cpp`` installs that handler when a worker starts), and the main
process then fails with "DataLoader worker (pid N) is killed by signal: Terminated" at whatever it was doing, before
:class:`rsa_lightning.callbacks.StopOnSignal` can finish the step and save ``last.ckpt``.

:func:`ignore_stop_signals` is meant as (part of) a DataLoader's ``worker_init_fn``, which runs in the worker after
PyTorch's own set-up: the worker then takes no notice of SIGTERM and SIGUSR1 from anyone but its parent and goes on
serving batches until the main process shuts it down. A SIGTERM from the main process still ends it at once (what
``multiprocessing`` sends its daemon processes at exit, and PyTorch when a worker does not stop in time). A Python
signal handler cannot see who sent a signal, so the signals are blocked in the worker and a thread takes them with
``sigwaitinfo``, which says.
"""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _take_stop_signals(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo(STOP_SIGNALS)
        if info.si_signo == signal.SIGTERM and info.si_pid == parent:
            os._exit(0)  # the main process ends this worker (as PyTorch's own handler does)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """In a DataLoader worker: SIGTERM and SIGUSR1 from other processes than the main one are taken and ignored (the
    main process handles its own); the main process's SIGTERM ends the worker."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # threads started from here on inherit the mask
    threading.Thread(target=_take_stop_signals, args=(os.getppid(),), name="stop-signals", daemon=True).start()
