"""Evaluation plots of a confusion matrix: the whole matrix, the direction-sensitive classes, per-class accuracy sorted,
and the top confusions with class names.

Input everywhere: a ``(K, K)`` int64 confusion matrix of video counts, row = true class, column = top-1 predicted
class (:func:`rsa_lightning.evaluation.metrics.confusion_matrix`, written by
:func:`rsa_lightning.evaluation.writers.write_confusion`), and the K class names. Every number shown comes from
:mod:`rsa_lightning.evaluation.metrics` (per-class accuracy:
:func:`~rsa_lightning.evaluation.metrics.per_class_accuracy`; the mean line:
:func:`~rsa_lightning.evaluation.metrics.mean_class_accuracy`, the logged ``<split>/mean_class_acc``), so a plot
never disagrees with the metrics files.

Plots (:func:`write_evaluation_plots` saves them next to a confusion CSV ``<dir>/<stem>.csv``):

- ``<stem>_matrix.png``: the confusion matrix, colour = share of the true class's videos (row-normalised). Up to
  ``max_classes`` (30) classes it shows every class in id order, with the counts written in the cells up to
  :data:`ANNOTATE_MAX_CLASSES`; above, only the ``max_classes`` classes involved in the most confusions (largest
  off-diagonal row + column sum), each followed by the class it is most confused with (the title says so). 174 SSv2
  classes cannot be read as 30,276 cells on one screen; their confusions concentrate on few classes.
- ``<stem>_direction.png``: the classes with a mirror or time-reversed partner (:func:`direction_partners`), each
  pair adjacent and outlined, with the share of their errors that go to the partner (:func:`partner_errors`). Not
  written when no class has a partner.
- ``<stem>_per_class.png``: per-class top-1 accuracy sorted, all classes with videos, or the lowest and the highest
  ``per_class_shown`` (20) of them, with the mean class accuracy as a line.
- ``<stem>_top_confusions.png`` and ``<stem>_top_confusions.csv``: the ``num_top`` (20) largest off-diagonal cells,
  "true -> predicted: count (share of the true class)" (:func:`top_confusions`).

Sizes: every figure is bounded (at most :data:`MAX_INCHES` inches a side, 100 dpi: 1600 px), whatever K; long class
names are shortened to :data:`NAME_WIDTH` characters (the CSV keeps them whole).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rsa_lightning.evaluation.metrics import mean_class_accuracy, per_class_accuracy
from rsa_lightning.visualization.figures import new_figure, save_figure

log = logging.getLogger(__name__)

MAX_MATRIX_CLASSES = 30
ANNOTATE_MAX_CLASSES = 30
PER_CLASS_SHOWN = 20
NUM_TOP = 20
NAME_WIDTH = 56
MAX_INCHES = 16.0
FONT = 7
BOTTOM = 0.7  # inches below a matrix: column ids and axis label
TOP = 0.8  # inches above a matrix: the title

PLOT_NAMES: dict[str, str] = {
    "matrix": "confusion",
    "direction": "direction",
    "per_class": "per_class",
    "top_confusions": "top_confusions",
}
"""Plot name (the file suffix ``<stem>_<name>.png``) -> logger key suffix (``<split>/<key>``)."""


class Confusion(NamedTuple):
    """One off-diagonal cell of a confusion matrix: ``count`` videos of class ``true`` predicted as ``predicted``;
    ``share``: count / videos of the true class."""

    true: int
    predicted: int
    true_name: str
    predicted_name: str
    count: int
    share: float


def _names(class_names: Sequence[str], num_classes: int) -> list[str]:
    return list(class_names) if len(class_names) == num_classes else [str(i) for i in range(num_classes)]


def _short(name: str, width: int = NAME_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def _label(i: int, names: Sequence[str]) -> str:
    return _short(names[i]) if names[i] == str(i) else f"{_short(names[i])} [{i}]"


def _check(confusion: torch.Tensor) -> torch.Tensor:
    confusion = torch.as_tensor(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"expected a (K, K) confusion matrix, got shape {tuple(confusion.shape)}")
    return confusion.long().cpu()


def direction_partners(class_names: Sequence[str]) -> dict[int, int]:
    """Classes whose partner class is their mirror image or their time reversal: ``{id: partner id}``, both ways.

    Two sources, both by class name:

    - mirror pairs, :func:`rsa_lightning.data.transforms.mirror_pairs`: names equal up to the words "left" and "right"
      swapped (SSv2: "Pushing something from left to right" / "... right to left", "Turning the camera left/right
      while filming something"); the flip policy of the training transform uses the same pairs;
    - time-reversal pairs of the generated dataset, :data:`rsa_lightning.data.synthetic.TIME_REVERSED` with the names
      of :data:`~rsa_lightning.data.synthetic.MOTIONS` (Something-Something templates: "Moving something up" /
      "Moving something down", "Turning something clockwise" / "... counterclockwise", ...); a pair counts wherever
      both names are classes, so SSv2's "Moving something up/down" and "Moving something and something closer
      to / away from each other" pair too.

    A class that would get two different partners keeps its mirror partner. Raises what ``mirror_pairs`` raises
    (``DataError`` for two names equal up to case and spaces).
    """
    from rsa_lightning.data.synthetic import MOTIONS, TIME_REVERSED
    from rsa_lightning.data.transforms import mirror_pairs

    partners = dict(mirror_pairs(class_names))
    index = {" ".join(name.split()).casefold(): i for i, name in enumerate(class_names)}
    for reverse, forward in TIME_REVERSED.items():
        a = index.get(MOTIONS[reverse].casefold())
        b = index.get(MOTIONS[forward].casefold())
        if a is None or b is None or a in partners or b in partners:
            continue
        partners[a], partners[b] = b, a
    return partners


def partner_errors(confusion: torch.Tensor, partners: Mapping[int, int]) -> tuple[int, int]:
    """``(errors to the partner, all errors)`` summed over the classes of ``partners``: videos of class ``i``
    predicted as ``partners[i]``, and videos of class ``i`` predicted as any other class."""
    confusion = _check(confusion)
    to_partner = sum(int(confusion[i, j]) for i, j in partners.items())
    errors = sum(int(confusion[i].sum() - confusion[i, i]) for i in partners)
    return to_partner, errors


def top_confusions(confusion: torch.Tensor, class_names: Sequence[str], k: int = NUM_TOP) -> list[Confusion]:
    """The ``k`` largest off-diagonal cells (count > 0), largest first; ties by the larger share of the true class,
    then by true and predicted id. ``share`` = count / videos of the true class (the row sum)."""
    confusion = _check(confusion)
    names = _names(class_names, confusion.shape[0])
    support = confusion.sum(dim=1)
    off = confusion.clone()
    off.fill_diagonal_(0)
    true, predicted = torch.nonzero(off, as_tuple=True)
    cells = [
        Confusion(t, p, names[t], names[p], int(off[t, p]), int(off[t, p]) / int(support[t]))
        for t, p in zip(true.tolist(), predicted.tolist())
    ]
    cells.sort(key=lambda c: (-c.count, -c.share, c.true, c.predicted))
    return cells[:k]


def write_top_confusions(path: Path, rows: Sequence[Confusion]) -> Path:
    """``rows`` as CSV: ``rank, true, true_name, predicted, predicted_name, count, share_of_true`` (names whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "true", "true_name", "predicted", "predicted_name", "count", "share_of_true"])
        for rank, c in enumerate(rows, 1):
            writer.writerow([rank, c.true, c.true_name, c.predicted, c.predicted_name, c.count, f"{c.share:.4f}"])
    return path


def _row_shares(confusion: torch.Tensor) -> np.ndarray:
    """(K, K) float: every cell over its row sum (the true class's videos); 0 in rows without videos."""
    counts = confusion.double().numpy()
    support = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)


def most_confused_order(confusion: torch.Tensor, num: int) -> list[int]:
    """The ``num`` classes in the most confusions (off-diagonal row + column sum, ties by id), ordered so that each
    class is followed by the not yet placed one among them it is most confused with (either direction)."""
    confusion = _check(confusion)
    off = confusion.clone()
    off.fill_diagonal_(0)
    mass = off.sum(dim=0) + off.sum(dim=1)
    chosen = sorted(range(len(mass)), key=lambda i: (-int(mass[i]), i))[:num]
    pair = (off + off.T)[chosen][:, chosen]  # (n, n) confusions either way among the chosen classes
    order: list[int] = []
    placed: set[int] = set()
    for a in range(len(chosen)):  # by mass
        if a in placed:
            continue
        order.append(a)
        placed.add(a)
        free = [b for b in range(len(chosen)) if b not in placed and int(pair[a, b]) > 0]
        if free:
            b = max(free, key=lambda b: (int(pair[a, b]), -b))
            order.append(b)
            placed.add(b)
    return [chosen[a] for a in order]


def _matrix_axes(figure: Figure, n: int, cell: float, margin: float, gap: float = 0.15) -> tuple:
    """The matrix axes (``n x n`` cells of ``cell`` inches, ``margin`` inches from the left edge, :data:`BOTTOM` from
    the bottom) and a colour bar ``gap`` inches right of it."""
    width, height = figure.get_size_inches()
    side = n * cell
    ax = figure.add_axes((margin / width, BOTTOM / height, side / width, side / height))
    cax = figure.add_axes(((margin + side + gap) / width, BOTTOM / height, 0.15 / width, side / height))
    return ax, cax


def _title(figure: Figure, text: str) -> None:
    """``text`` at the top left of ``figure`` (above everything, whatever the axes' position)."""
    _, height = figure.get_size_inches()
    figure.text(0.1 / figure.get_size_inches()[0], 1 - 0.1 / height, text, fontsize=FONT + 2, va="top", ha="left")


def _draw_matrix(
    figure: Figure,
    ax,
    cax,
    confusion: torch.Tensor,
    classes: Sequence[int],
    names: Sequence[str],
    annotate: bool,
) -> None:
    shares = _row_shares(confusion)[np.ix_(classes, classes)]
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    figure.colorbar(image, cax=cax).set_label("share of the true class's videos", fontsize=FONT)
    cax.tick_params(labelsize=FONT)
    ax.set_xticks(
        range(len(classes)), [str(i) for i in classes], rotation=90 if max(classes) > 99 else 0, fontsize=FONT
    )
    ax.set_yticks(range(len(classes)), [_label(i, names) for i in classes], fontsize=FONT)
    ax.set_xlabel("predicted class (id, as the rows' [id])", fontsize=FONT + 1)
    ax.set_ylabel("true class", fontsize=FONT + 1)
    if annotate:
        counts = confusion[classes][:, classes]
        for r in range(len(classes)):
            for c in range(len(classes)):
                if int(counts[r, c]):
                    colour = "white" if shares[r, c] > 0.5 else "black"
                    ax.text(c, r, str(int(counts[r, c])), ha="center", va="center", fontsize=FONT, color=colour)


def _matrix_figure_size(n: int, names: Sequence[str], classes: Sequence[int]) -> tuple[float, float, float, float]:
    """``(cell, margin, width, height)`` in inches: the left margin follows the longest row label (about 0.05 in per
    character at 7 pt), the bottom margin holds the column ids."""
    longest = max((len(_label(i, names)) for i in classes), default=1)
    margin = 0.75 + 0.05 * longest
    cell = min(0.4, max(0.1, (MAX_INCHES - margin - 1.2) / max(n, 1)))
    width = min(MAX_INCHES, margin + n * cell + 1.2)
    height = min(MAX_INCHES, BOTTOM + n * cell + TOP)
    return cell, margin, width, height


def confusion_matrix_figure(
    confusion: torch.Tensor, class_names: Sequence[str], *, max_classes: int = MAX_MATRIX_CLASSES
) -> Figure:
    """The confusion matrix as a heat map of row-normalised shares (module docstring: which classes, which order)."""
    confusion = _check(confusion)
    k = confusion.shape[0]
    names = _names(class_names, k)
    if k <= max_classes:
        classes = list(range(k))
        title = f"Confusion matrix, all {k} classes"
    else:
        classes = most_confused_order(confusion, max_classes)
        title = (
            f"Confusion matrix: the {len(classes)} of {k} classes in the most confusions\n"
            "(largest off-diagonal row + column count), each followed by the class it is most confused with"
        )
    videos = int(confusion.sum())
    correct = int(confusion.diagonal().sum())
    title += f"\n{videos} videos, {correct} correct ({100 * correct / max(videos, 1):.1f}%); colour: row-normalised"
    cell, margin, width, height = _matrix_figure_size(len(classes), names, classes)
    figure = new_figure(width, height)
    ax, cax = _matrix_axes(figure, len(classes), cell, margin)
    _draw_matrix(figure, ax, cax, confusion, classes, names, annotate=len(classes) <= ANNOTATE_MAX_CLASSES)
    _title(figure, title)
    return figure


def direction_figure(
    confusion: torch.Tensor,
    class_names: Sequence[str],
    partners: Optional[Mapping[int, int]] = None,
    *,
    max_pairs: int = MAX_MATRIX_CLASSES // 2,
) -> Optional[Figure]:
    """The confusion matrix over the classes with a direction partner (:func:`direction_partners` unless given),
    each pair adjacent and outlined, pairs ordered by id (above ``max_pairs`` pairs: the pairs with the most errors);
    the title gives the share of these classes' errors that go to the partner. None when no class has a partner."""
    confusion = _check(confusion)
    names = _names(class_names, confusion.shape[0])
    partners = direction_partners(names) if partners is None else dict(partners)
    pairs = sorted({(min(a, b), max(a, b)) for a, b in partners.items()})
    if not pairs:
        return None
    title = f"Direction-sensitive classes: {len(pairs)} mirror / time-reversed pairs"
    if len(pairs) > max_pairs:

        def pair_errors(p: tuple[int, int]) -> int:
            return sum(int(confusion[i].sum() - confusion[i, i]) for i in p)

        pairs = sorted(sorted(pairs, key=lambda p: (-pair_errors(p), p))[:max_pairs])
        title += f", the {max_pairs} with the most errors"
    classes = [i for pair in pairs for i in pair]
    to_partner, errors = partner_errors(confusion, {i: partners[i] for i in classes})
    share = f"{100 * to_partner / errors:.1f}%" if errors else "n/a"
    title += f"\nerrors of these classes that go to the partner: {to_partner} of {errors} ({share})"
    cell, margin, width, height = _matrix_figure_size(len(classes), names, classes)
    column = 1.7  # inches: the per-row "errors to partner" column between the matrix and the colour bar
    figure = new_figure(min(MAX_INCHES, width + column), height)
    ax, cax = _matrix_axes(figure, len(classes), cell, margin, gap=column)
    _draw_matrix(figure, ax, cax, confusion, classes, names, annotate=len(classes) <= ANNOTATE_MAX_CLASSES)
    for p in range(len(pairs)):
        ax.add_patch(Rectangle((2 * p - 0.5, 2 * p - 0.5), 2, 2, fill=False, edgecolor="tab:red", linewidth=1.2))
    for r, i in enumerate(classes):
        row_errors = int(confusion[i].sum() - confusion[i, i])
        ax.text(
            len(classes) - 0.5 + 0.1 / cell,
            r,
            f"{int(confusion[i, partners[i]])}/{row_errors} errors to partner",
            ha="left",
            va="center",
            fontsize=FONT,
            clip_on=False,
        )
    _title(figure, title)
    return figure


def per_class_figure(
    confusion: torch.Tensor, class_names: Sequence[str], *, shown: int = PER_CLASS_SHOWN
) -> Optional[Figure]:
    """Per-class top-1 accuracy (:func:`~rsa_lightning.evaluation.metrics.per_class_accuracy`) of the classes with
    videos as sorted horizontal bars, lowest on top; more than ``2 * shown`` classes: the lowest and the highest
    ``shown``. The vertical line is the mean class accuracy
    (:func:`~rsa_lightning.evaluation.metrics.mean_class_accuracy`). None when no class has videos."""
    confusion = _check(confusion)
    names = _names(class_names, confusion.shape[0])
    accuracy = per_class_accuracy(confusion)
    ranked = sorted((float(a), i) for i, a in enumerate(accuracy.tolist()) if not math.isnan(a))
    if not ranked:
        return None
    title = f"Per-class top-1 accuracy, {len(ranked)} classes with videos"
    rows: list[Optional[tuple[float, int]]] = list(ranked)
    if len(ranked) > 2 * shown:
        rows = ranked[:shown] + [None] + ranked[-shown:]
        title += f": the lowest and the highest {shown}"
    longest = max(len(_label(i, names)) for _, i in ranked)
    margin = 0.4 + 0.055 * longest
    row = 0.2
    height = min(MAX_INCHES, 1.3 + row * len(rows))
    width = margin + 5.0
    figure = new_figure(width, height)
    ax = figure.add_axes((margin / width, 0.5 / height, 4.6 / width, (height - 1.2) / height))
    y = np.arange(len(rows))
    values = [r[0] if r else 0.0 for r in rows]
    ax.barh(y, values, color=["tab:blue" if r else "none" for r in rows], height=0.75)
    ax.set_yticks(y, [_label(r[1], names) if r else "\u22ee" for r in rows], fontsize=FONT)
    for yy, r in zip(y, rows):
        if r:
            ax.text(min(r[0], 1.0) + 0.01, yy, f"{100 * r[0]:.0f}%", va="center", fontsize=FONT - 1)
    mean = mean_class_accuracy(confusion)
    ax.axvline(
        mean, color="tab:red", linewidth=1.2, label=f"mean class accuracy {100 * mean:.1f}% (the logged mean_class_acc)"
    )
    ax.legend(fontsize=FONT, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_xlim(0, 1.1)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # lowest on top
    ax.set_xlabel("top-1 accuracy (share of the class's videos)", fontsize=FONT + 1)
    ax.tick_params(axis="x", labelsize=FONT)
    _title(figure, title)
    return figure


def top_confusions_figure(rows: Sequence[Confusion], *, num_classes: Optional[int] = None) -> Figure:
    """``rows`` (:func:`top_confusions`) as a table: rank, true class, predicted class, count, share of the true
    class's videos."""
    line = 0.2
    height = min(MAX_INCHES, 1.0 + line * (len(rows) + 1))
    width = 11.0
    figure = new_figure(width, height)
    of = f" of {num_classes} classes" if num_classes else ""
    figure.text(
        0.3 / width,
        1 - 0.35 / height,
        f"Top confusions{of}: true -> predicted: count (share of the true class's videos)",
        fontsize=FONT + 2,
        va="top",
    )
    columns = (0.3, 0.7, 4.9, 5.3, 9.5, 10.1)  # inches: rank, true, ->, predicted, count, share
    header = ("#", "true class", "", "predicted class", "count", "share")
    top = 1 - 0.75 / height
    for x, text in zip(columns, header):
        figure.text(x / width, top, text, fontsize=FONT + 1, fontweight="bold", va="top")
    if not rows:
        figure.text(columns[1] / width, top - line / height, "no confusions: every video is correct", fontsize=FONT)
        return figure
    cells = [
        (str(r), _short(c.true_name, 60), "->", _short(c.predicted_name, 60), str(c.count), f"{c.share:.1%}")
        for r, c in enumerate(rows, 1)
    ]
    for x, column in zip(columns, zip(*cells)):  # one multi-line text per column: aligned rows, few text objects
        figure.text(x / width, top - line / height, "\n".join(column), fontsize=FONT + 1, va="top", linespacing=1.6)
    return figure


def evaluation_figures(
    confusion: torch.Tensor,
    class_names: Sequence[str],
    *,
    max_classes: int = MAX_MATRIX_CLASSES,
    per_class_shown: int = PER_CLASS_SHOWN,
    num_top: int = NUM_TOP,
) -> tuple[dict[str, Figure], list[Confusion]]:
    """Every plot of :data:`PLOT_NAMES` that has something to show, and the top-confusion rows. An empty matrix (no
    video) gives ``({}, [])``."""
    confusion = _check(confusion)
    if int(confusion.sum()) == 0:
        return {}, []
    rows = top_confusions(confusion, class_names, num_top)
    figures = {
        "matrix": confusion_matrix_figure(confusion, class_names, max_classes=max_classes),
        "direction": direction_figure(confusion, class_names),
        "per_class": per_class_figure(confusion, class_names, shown=per_class_shown),
        "top_confusions": top_confusions_figure(rows, num_classes=confusion.shape[0]),
    }
    return {name: f for name, f in figures.items() if f is not None}, rows


def plot_path(confusion_file: Path, name: str, suffix: str = ".png") -> Path:
    """``<dir>/<stem>.csv`` -> ``<dir>/<stem>_<name><suffix>``: where the plot ``name`` of that matrix goes."""
    confusion_file = Path(confusion_file)
    return confusion_file.with_name(f"{confusion_file.stem}_{name}{suffix}")


class WrittenPlot(NamedTuple):
    """A plot saved by :func:`write_evaluation_plots`: its PNG ``path`` and the saved picture, ``image`` (H, W, 3)
    uint8 RGB (for the loggers; the same pixels as the file)."""

    path: Path
    image: np.ndarray


def _save(figure: Figure, path: Path) -> WrittenPlot:
    """Saves ``figure`` (:func:`~rsa_lightning.visualization.figures.save_figure`) and takes the picture from the
    canvas that ``savefig`` just drew (an Agg figure saved as PNG at its own dpi is drawn on its own canvas), so a
    plot is rendered once whether or not it is also logged. Glyphs are drawn unhinted: a third faster for these
    text-heavy figures (measured), and as legible at 100 dpi."""
    with rc_context({"text.hinting": "none"}):
        path = save_figure(figure, path)
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    figure.clear()
    return WrittenPlot(path, image)


def write_evaluation_plots(
    confusion_file: Path,
    confusion: torch.Tensor,
    class_names: Sequence[str],
    **options: int,
) -> dict[str, WrittenPlot]:
    """Saves the plots of ``confusion`` next to its CSV ``confusion_file`` (:func:`plot_path`) and the top
    confusions as ``<stem>_top_confusions.csv``; returns ``{plot name: WrittenPlot}`` (:data:`PLOT_NAMES`).
    ``options``: of :func:`evaluation_figures`. An empty matrix (no video) writes nothing and returns ``{}``."""
    figures, rows = evaluation_figures(confusion, class_names, **options)
    if not figures:
        log.info("no videos in %s: no evaluation plots", confusion_file)
        return {}
    written = {name: _save(figure, plot_path(confusion_file, name)) for name, figure in figures.items()}
    write_top_confusions(plot_path(confusion_file, "top_confusions", ".csv"), rows)
    if rows:
        log.info(
            "top confusions (%s): %s",
            Path(confusion_file).stem,
            "; ".join(f"{c.true_name} -> {c.predicted_name}: {c.count} ({c.share:.0%})" for c in rows[:3]),
        )
    return written
