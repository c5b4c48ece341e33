"""What a user sees in the terminal: log records that never land on a progress bar's line, one epoch numbering, and
no library advertising or noise.

- :class:`ProgressBarAwareHandler` is the console handler of every entry point (``hydra.job_logging.handlers.console``
  in ``conf/hydra/default.yaml``). A progress bar redraws its line with ``\\r``; a record written while it is shown
  would be glued to it. The handler clears the active tqdm bars (Lightning's ``TQDMProgressBar``, which ``train.py``
  uses: :class:`rsa_lightning.callbacks.progress.EpochProgressBar`), writes the record and redraws them below it. It
  writes to the *current* ``sys.stdout`` / ``sys.stderr`` rather than to the stream of logging's configuration time,
  so a rich live display (Lightning's ``RichProgressBar``, which ``eval.py``'s trainer uses when ``rich`` is
  installed; it redirects ``sys.stdout`` while it renders) prints the record above the bar too.
- :func:`setup_console`, called first thing by ``train.py`` and ``eval.py``, makes Lightning's records go through
  the run's handlers (console and ``<task>.log``), sends warnings through logging as well (``logging.captureWarnings``:
  above the bar on the console, and into the log file), drops Lightning's advertising everywhere, keeps start-up
  details out of the console (they stay in the log file) and ignores library deprecation warnings the user cannot act
  on, each by a message regex (:data:`IGNORED_WARNINGS`). Other warnings stay.
- :func:`epoch_label`: the one epoch numbering of the console, 1-based ("epoch 1/18" is the first of 18 epochs), used
  by the progress bar and by the per-epoch summary (:class:`rsa_lightning.callbacks.EpochSummary`). Lightning's own
  ``current_epoch`` (and the checkpoint files named after it, ``best_epoch_000.ckpt``) counts from 0.

Log files stay plain text: the bars write to the terminal only, never through logging.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Optional, TextIO

# Lightning's loggers: they get a stream handler of their own (and stop propagating) when Lightning is imported
# before logging is configured, as train.py and eval.py do
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning", "lightning.pytorch", "lightning.fabric")

# (logger name prefix, message regex): records dropped everywhere, the console and the log file (advertising, and
# notes about what this project configures on purpose)
DROPPED_RECORDS: tuple[tuple[str, str], ...] = (
    ("lightning", r"💡 Tip"),
    ("pytorch_lightning", r"💡 Tip"),
    ("lightning_fabric", r"💡 Tip"),
    # conf/callbacks/model_summary.yaml is our own ModelSummary, on purpose
    ("pytorch_lightning", r"^Trainer already configured with model summary callbacks"),
    # every checkpoint save says so: it is a full checkpoint (optimiser, loops, callbacks), as it should be
    ("pytorch_lightning", r"^`weights_only` was not set, defaulting to `False`"),
)

# (logger name prefix, message regex): start-up details kept out of the console of every entry point (they stay in
# the log file); what a user needs is in the start-up lines of rsa_lightning/train.py and EpochSummary
CONSOLE_DETAILS: tuple[tuple[str, str], ...] = (
    ("pytorch_lightning", r"^(GPU|TPU|HPU) available"),  # the start-up lines name the device
    ("pytorch_lightning", r"^LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES"),
    ("pytorch_lightning", r"^Loading `train_dataloader` to estimate number of stepping batches"),
    ("pytorch_lightning", r"^`Trainer.fit` stopped: `max_epochs=\d+` reached"),  # the normal end; train.py says so
    ("lightning_fabric", r"^Seed set to"),
    ("rsa_lightning.utils.instantiate", r"^instantiating "),
    ("rsa_lightning.data.synthetic", r"^synthetic dataset at .* is complete"),
)

# the console details of a training run: what its start-up lines and per-epoch summary already say
TRAIN_CONSOLE_DETAILS: tuple[tuple[str, str], ...] = CONSOLE_DETAILS + (
    ("rsa_lightning.modules.video_classifier", r"^global batch \d+ = "),  # EpochSummary's start line says it
    ("rsa_lightning.data.datamodule", r"^(train|val) split: "),  # the "data:" start-up line counts the videos
    ("rsa_lightning.evaluation.writers", r"^val epoch\d+: "),  # per-class accuracy of each epoch: in train.log
)

# (category, message regex) of warnings ignored by every entry point: deprecations inside libraries, which the user
# cannot act on
IGNORED_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # Lightning 2.6's pytree helper on torch >= 2.9 (pytorch_lightning/utilities/_pytree.py)
    (Warning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)

# a training run with trainer.limit_train_batches set (a debugging run) is short on purpose: Lightning's warning that
# an epoch has fewer batches than trainer.log_every_n_steps is then noise
SHORT_EPOCH_WARNING = r"The number of training batches \(\d+\) is smaller than the logging interval"


def epoch_label(epoch: int, max_epochs: Optional[int]) -> str:
    """The console's name of the 0-based Lightning epoch ``epoch``: ``"1/18"`` (1-based, of ``max_epochs``), or
    ``"1"`` when the number of epochs is open (``max_epochs`` None or -1: training runs until ``max_steps``)."""
    if max_epochs is None or max_epochs < 0:
        return str(epoch + 1)
    return f"{epoch + 1}/{max_epochs}"


def _compile(patterns: Iterable[tuple[str, str]]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((prefix, re.compile(regex)) for prefix, regex in patterns)


class RecordFilter(logging.Filter):
    """A handler filter that drops the records whose logger name starts with a prefix and whose message matches its
    regex (``patterns``: ``(prefix, regex)`` pairs; the prefix matches whole name components: ``pytorch_lightning``
    covers ``pytorch_lightning.utilities.rank_zero``). Records at WARNING and above always pass. ``role`` names what
    the filter is for; :func:`setup_console` replaces a handler's filter of the same role instead of adding another."""

    def __init__(self, patterns: Iterable[tuple[str, str]], role: str = "") -> None:
        super().__init__()
        self.patterns = _compile(patterns)
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        name = record.name
        matching = [p for prefix, p in self.patterns if name == prefix or name.startswith(prefix + ".")]
        if not matching:
            return True
        message = record.getMessage()
        return not any(p.search(message) for p in matching)


def _std_stream_name(stream: Optional[TextIO]) -> Optional[str]:
    """``"stdout"`` / ``"stderr"`` when ``stream`` is one of the standard streams (or None: stderr, as logging's
    default), else None (a file: written as given)."""
    if stream is None:
        return "stderr"
    for name in ("stdout", "stderr"):
        if stream is getattr(sys, name) or stream is getattr(sys, f"__{name}__"):
            return name
    return None


class ProgressBarAwareHandler(logging.StreamHandler):
    """A console ``StreamHandler`` whose records start on a line of their own while a progress bar is shown.

    Args:
        stream: ``sys.stdout`` (as Hydra configures its console handler: ``ext://sys.stdout``), ``sys.stderr`` or
            None (stderr). A standard stream is looked up at each write (so a stream redirected since, e.g. by rich's
            live display or pytest, receives the record); any other stream is written as given.

    While tqdm bars are active on the terminal (stdout or stderr), each record is written inside
    ``tqdm.external_write_mode``: the bars are cleared first and redrawn after the record. Only in the process that
    created the handler: a forked worker holds stale copies of the parent's bars and writes its records plainly.
    """

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        super().__init__(stream)
        self._stream_name = _std_stream_name(stream)
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        if self._stream_name is not None:
            self.stream = getattr(sys, self._stream_name)  # emit runs under the handler's lock (Handler.handle)
        tqdm = sys.modules.get("tqdm")  # no tqdm imported: no tqdm bar to clear
        if tqdm is None or os.getpid() != self._pid:
            super().emit(record)
            return
        try:
            with tqdm.tqdm.external_write_mode(file=self.stream):
                super().emit(record)
        except Exception:  # a bar that cannot be cleared or redrawn never costs the record
            self.handleError(record)


def _route_lightning_loggers() -> None:
    """Lightning's loggers propagate to the root logger's handlers (console and log file), without their own."""
    existing = logging.root.manager.loggerDict
    for name in LIGHTNING_LOGGERS:
        if name not in existing:
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # the one Lightning adds when imported unconfigured
                logger.removeHandler(handler)
        logger.propagate = True


def _add_filter_once(handler: logging.Handler, new: RecordFilter) -> None:
    for old in list(handler.filters):
        if isinstance(old, RecordFilter) and old.role == new.role:
            handler.removeFilter(old)
    handler.addFilter(new)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def setup_console(
    *,
    console_details: Sequence[tuple[str, str]] = CONSOLE_DETAILS,
    ignored_warnings: Sequence[tuple[type[Warning], str]] = IGNORED_WARNINGS,
) -> None:
    """Configures the console of an entry point, after Hydra has configured logging (see the module docstring).

    Args:
        console_details: ``(logger prefix, message regex)`` of INFO records kept out of the console handlers (they
            stay in the log file): :data:`CONSOLE_DETAILS`, or :data:`TRAIN_CONSOLE_DETAILS` for ``train.py``.
        ignored_warnings: ``(category, message regex)`` of warnings to ignore (:func:`warnings.filterwarnings`).

    Idempotent: calling it again (the next job of a multirun) replaces its filters instead of stacking them. Does
    nothing to the handlers when the root logger has none (logging not configured: e.g. a library user).
    """
    for category, regex in ignored_warnings:
        warnings.filterwarnings("ignore", message=regex, category=category)
    root = logging.getLogger()
    if not root.handlers:
        return
    _route_lightning_loggers()
    logging.captureWarnings(True)  # warnings through the handlers: above the bar, and in the log file
    dropped = RecordFilter(DROPPED_RECORDS, role="dropped")
    details = RecordFilter(console_details, role="console details")
    for handler in root.handlers:
        _add_filter_once(handler, dropped)
        if _is_console(handler):
            _add_filter_once(handler, details)
