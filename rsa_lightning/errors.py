"""What a user sees when a run fails: one short message and an exit code; the full traceback goes to the run's log.

Exit codes of ``train.py``, ``eval.py`` and the tools:

- ``2``: bad input the user can fix (a config key, a file, a checkpoint, a video list). The message names the key or
  file and the fix. Raised as a :class:`UserError` subclass, or as a ``ValueError`` / ``FileNotFoundError`` /
  ``NotADirectoryError`` from a ``raise`` inside this package (its convention for bad arguments and files), or as an
  ``OSError`` that says an output cannot be written (permission denied, read-only file system, no space left).
- ``1``: a fault of the run itself whose message explains it (:class:`RunFault`: the loss diverged, out of memory,
  the disk filled up), and any other error (a bug: Hydra prints its traceback as usual).
- ``3``: training stopped on SIGTERM / SIGUSR1 after saving a resumable checkpoint
  (:class:`rsa_lightning.callbacks.preemption.Interrupted`); ``python train.py resume=<run dir>`` continues it.

Under DDP only global rank 0 prints the message; every process exits with the code.

``HYDRA_FULL_ERROR=1`` prints the traceback on the console as well (and lets Hydra print it, as Hydra documents:
https://hydra.cc/docs/tutorials/basic/running_your_app/debugging/).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

log = logging.getLogger(__name__)

USER_ERROR_EXIT = 2
FAULT_EXIT = 1
INTERRUPTED_EXIT = 3
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"

PACKAGE_DIR = Path(__file__).resolve().parent
# our own convention for bad arguments, files and values (``raise ValueError(...)`` inside rsa_lightning)
_INPUT_ERROR_TYPES = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
_WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """Bad input the user can fix; the message (one line) says what, which file or key, and the fix. Exit code 2."""

    exit_code = USER_ERROR_EXIT


class ConfigError(UserError, ValueError):
    """A config value that cannot work (named by its key, e.g. ``data.root``), found before any heavy work."""


class DataError(UserError, ValueError):
    """A dataset file (annotation, list, class names, video) that cannot be read as its format says."""


class CheckpointError(UserError, ValueError):
    """A checkpoint not for this use: truncated, another model or class set, an official release, pickled code."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the config names does not exist."""


class RunFault(Exception):
    """A fault of the run itself (divergence, out of memory, disk full), explained by the message. Exit code 1."""

    exit_code = FAULT_EXIT


def _is_ours(tb: Any) -> bool:
    """True when the innermost frame of a traceback (where the exception was raised) is a file of this package."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    return Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


# torch's DataLoader re-raises a worker's exception as the same type with the worker's traceback in the message
_WORKER_TRACEBACK = re.compile(r"Original Traceback \(most recent call last\):\n(?P<tb>.*)", re.S)


def _worker_error(err: BaseException) -> Optional[tuple[bool, str]]:
    """(raised in this package, last line) of an exception re-raised from a DataLoader worker, else None."""
    match = _WORKER_TRACEBACK.search(str(err))
    if match is None:
        return None
    lines = [line for line in match.group("tb").splitlines() if line.strip()]
    files = [line for line in lines if line.lstrip().startswith('File "')]
    ours = bool(files) and str(PACKAGE_DIR) in files[-1]
    last = lines[-1] if lines else str(err)
    return ours, re.sub(r"^[\w.]+(Error|Exception|Fault|Diverged)?: ", "", last.strip())


def os_error_in_chain(err: Optional[BaseException], errnos: tuple[int, ...]) -> Optional[OSError]:
    """The ``OSError`` with one of ``errnos`` that ``err`` is or was raised from (``__cause__`` / ``__context__``:
    torch's checkpoint writer, for one, turns ENOSPC into a ``RuntimeError``), else None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in errnos:
            return err
        err = err.__cause__ or err.__context__
    return None


def _write_error(err: BaseException) -> Optional[OSError]:
    """The ``OSError`` (permission, read-only, no space) that ``err`` is or was raised from, else None."""
    return os_error_in_chain(err, _WRITE_ERRNOS)


def _instantiation_cause(err: BaseException) -> Optional[BaseException]:
    """The error a config object's constructor raised, for Hydra's ``InstantiationException`` wrapping it."""
    if type(err).__name__ == "InstantiationException" and err.__cause__ is not None:
        return err.__cause__
    return None


def _is_missing_value(err: BaseException) -> bool:
    """An OmegaConf error about a mandatory value (``???``) that was not given."""
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    return isinstance(err, (MissingMandatoryValue, InterpolationToMissingValueError))


def _interpolation_error(err: BaseException) -> bool:
    """An interpolation of the config that does not resolve (``data.root=${oops}``, ``${oc.env:VAR}`` of an unset
    variable): bad input, whether it came from the command line or a config file the user wrote."""
    from omegaconf.errors import InterpolationResolutionError

    return isinstance(err, InterpolationResolutionError)


def classify(err: BaseException) -> Optional[int]:
    """The exit code for an exception a user should see as one message (2 bad input, 1 a run fault, 3 interrupted),
    else None (a bug: the traceback is shown)."""
    if isinstance(err, (UserError, RunFault)):
        return err.exit_code
    if _write_error(err) is not None:
        return USER_ERROR_EXIT
    if _is_missing_value(err):
        return USER_ERROR_EXIT
    if _interpolation_error(err):  # a resolver of ours that refused a value: its own code and message
        return classify(err.__cause__) if isinstance(err.__cause__, UserError) else USER_ERROR_EXIT
    cause = _instantiation_cause(err)
    if cause is not None:  # a value a constructor refused (ours or a library's, e.g. Lightning's Trainer): bad config
        refused = isinstance(cause, (ValueError, TypeError)) or type(cause).__name__ == "MisconfigurationException"
        return classify(cause) or (USER_ERROR_EXIT if refused else None)
    if isinstance(err, _INPUT_ERROR_TYPES):
        worker = _worker_error(err)
        ours = worker[0] if worker is not None else _is_ours(err.__traceback__)
        return USER_ERROR_EXIT if ours else None
    return None


def message(err: BaseException) -> str:
    """The one-line (or few-line) message for an error :func:`classify` accepts."""
    worker = _worker_error(err)
    if worker is not None:
        return worker[1]
    if isinstance(err, (UserError, RunFault)):
        return str(err).strip() or type(err).__name__
    written = _write_error(err)
    if written is not None:
        what = written.filename or "an output file"
        fix = (
            "free space there or write elsewhere (paths.log_dir=... or hydra.run.dir=...)"
            if written.errno in (errno.ENOSPC, errno.EDQUOT)
            else "choose a writable folder (paths.log_dir=... or hydra.run.dir=...)"
        )
        return f"cannot write {what}: {written.strerror}; {fix}"
    if _is_missing_value(err):
        key = getattr(err, "full_key", None)
        text = str(err).strip().splitlines()[0]
        missing = re.search(r"Missing mandatory value: ([\w.]+)", text)
        name = missing.group(1) if missing and "interpolation" in text else (key or missing and missing.group(1))
        return f"{name} is not set (??? in the config): add {name}=<value> to the command line"
    if _interpolation_error(err):
        if isinstance(err.__cause__, UserError):
            return message(err.__cause__)
        key = getattr(err, "full_key", None) or "a config value"
        text = str(err).strip().splitlines()[0]
        return (
            f"{key} cannot be resolved: {text}; fix the ${{...}} interpolation on the command line or in the config "
            "(an environment variable it reads must be set)"
        )
    cause = _instantiation_cause(err)
    if cause is not None:
        target = re.search(r"Error in call to target '([^']+)'", str(err))
        where = f"{target.group(1)}: " if target else ""
        if isinstance(cause, UserError):  # its message already names the key and the fix
            return f"{where}{message(cause)}"
        return f"{where}{message(cause)} (check the config values it is built from)"
    return str(err).strip() or type(err).__name__


def _log_to_files(level: int, text: str, exc_info: Any = None) -> list[str]:
    """Writes one record to the file handlers of the root logger only (not the console); returns their paths."""
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]
    record = logging.LogRecord(__name__, level, __file__, 0, text, None, exc_info)
    for handler in files:
        handler.handle(record)
    return [h.baseFilename for h in files]


def log_traceback_to_files(err: BaseException, text: str = "failed") -> list[str]:
    """Writes ``text`` and ``err``'s traceback to the file handlers of the root logger (the run's ``train.log`` /
    ``eval.log``) only, not to the console; returns their paths."""
    return _log_to_files(logging.ERROR, text, (type(err), err, err.__traceback__))


def report(err: BaseException) -> Optional[int]:
    """For an error :func:`classify` accepts: the message and traceback to the log files, ``error: <message>`` on
    stderr; returns the exit code. None (nothing done) for any other error."""
    code = classify(err)
    if code is None:
        return None
    text = message(err)
    if code == INTERRUPTED_EXIT:  # not an error: the run stopped as asked, and says how to go on
        _log_to_files(logging.WARNING, text)
        if _rank() == 0:
            _print_above_bars(text)
        return code
    files = log_traceback_to_files(err, f"error: {text}")
    if _rank() != 0:  # rank 0 prints the message (every rank logs and exits with the code)
        return code
    if os.environ.get(FULL_ERROR_ENV) == "1":
        traceback.print_exception(err)
    where = f"\n(full traceback in {files[0]}; HYDRA_FULL_ERROR=1 prints it here)" if files else ""
    _print_above_bars(f"error: {text}{where}")
    return code


def _print_above_bars(text: str) -> None:
    """Prints ``text`` on stderr on a line of its own, last: the progress bars of a run that failed inside an epoch
    are closed first (they end their line), so the message never continues a bar's line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        with contextlib.suppress(Exception):  # a bar that cannot be closed must not hide the message
            bar.close()
    print(text, file=sys.stderr, flush=True)


def _rank() -> int:
    """This process's global rank as the launchers set it (0 when not distributed)."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(key)
        if value is not None and value.isdigit():
            return int(value)
    return 0


F = TypeVar("F", bound=Callable[..., Any])

# set once a task function of this process has started: a Hydra exit before that is a composition error (bad input)
_task_started = False


def handle_errors(task: F) -> F:
    """Decorates a ``@hydra.main`` task function (put it under ``@hydra.main``): a user error or a run fault ends
    the process with :func:`report`'s message and exit code instead of Hydra's traceback."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _task_started
        _task_started = True
        # a log file that cannot be written (a full disk) must not print a traceback per log line on the console
        logging.raiseExceptions = False
        try:
            return task(*args, **kwargs)
        except Exception as err:
            code = report(err)
            if code is None:
                raise
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


class Terminated(BaseException):
    """SIGTERM outside training (start-up, data generation, evaluation), raised in the main thread by the handler
    :func:`run_hydra_main` installs, so that worker pools are terminated on the way out (``with`` blocks) instead of
    outliving the process. A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` swallows it."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def run_hydra_main(main: Callable[[], Any]) -> None:
    """Runs a ``@hydra.main`` function; a config Hydra could not compose (unknown group option, key not in the
    config, bad override syntax: Hydra prints a short message and exits 1) exits with the bad-input code 2, and a
    Ctrl-C or SIGTERM outside training (inside it, :class:`rsa_lightning.callbacks.StopOnSignal` saves and stops)
    with 130 or 143, the shell's codes for SIGINT and SIGTERM, without a traceback and without leaving worker
    processes behind."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:
            sys.exit(USER_ERROR_EXIT)
        raise
    except KeyboardInterrupt:  # Ctrl-C outside training (start-up, data generation): no traceback
        print("\ninterrupted (Ctrl-C); a partly generated data set is generated again next time", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print(
            "\nstopped by SIGTERM outside training (nothing to save); a partly generated data set is generated again "
            "next time",
            file=sys.stderr,
        )
        sys.exit(128 + signal.SIGTERM)


def run_cli(main: Callable[[], int | None]) -> int:
    """Runs an argparse tool's ``main``; returns its exit code, or :func:`report`'s for a user error or fault."""
    try:
        return main() or 0
    except Exception as err:
        code = report(err)
        if code is None:
            raise
        return code
