"""Lightning's model summary table without the FLOPs it cannot count ("0 Total Flops")."""

from __future__ import annotations

import logging
from typing import Any

from pytorch_lightning.callbacks import ModelSummary as LightningModelSummary
from pytorch_lightning.utilities.model_summary import get_human_readable_count

log = logging.getLogger(__name__)

FLOPS_COLUMN = "FLOPs"


def format_summary_table(
    columns: list[tuple[str, list[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: dict[str, int],
) -> str:
    """The layer table (``columns``: ``(header, one value per layer)``) and the parameter totals, as Lightning lays
    them out, without a FLOPs line. ``model_size`` is in MB."""
    widths = [max([len(header), *(len(str(v)) for v in values)]) for header, values in columns]
    rows = [" | ".join(f"{header:<{w}}" for (header, _), w in zip(columns, widths))]
    rule = "-" * (sum(widths) + 3 * (len(columns) + 1))
    rows.append(rule)
    num_rows = len(columns[0][1]) if columns else 0
    for i in range(num_rows):
        rows.append(" | ".join(f"{str(values[i]):<{w}}" for (_, values), w in zip(columns, widths)))
    rows.append(rule)
    totals = [
        (get_human_readable_count(trainable_parameters), "Trainable params"),
        (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
        (get_human_readable_count(total_parameters), "Total params"),
        (f"{model_size:,.3f}", "Total estimated model params size (MB)"),
        (str(total_training_modes.get("train", 0)), "Modules in train mode"),
        (str(total_training_modes.get("eval", 0)), "Modules in eval mode"),
    ]
    rows.extend(f"{value:<10}{label}" for value, label in totals)
    return "\n".join(rows)


class ModelSummary(LightningModelSummary):
    """Lightning's ``ModelSummary`` callback (same arguments: ``max_depth``, 0 = no table) that leaves out the FLOPs
    column and the "Total Flops" line when Lightning could not count them (0: it counts only with the module's
    ``example_input_array``, which :class:`~rsa_lightning.modules.VideoClassifier` does not set). The cost of the
    network is in the start-up lines instead: GMACs per view, counted by :mod:`rsa_lightning.tools.flops`
    (``run_info.json``)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            LightningModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops=total_flops,
                **summarize_kwargs,
            )
            return
        columns = [(header, values) for header, values in summary_data if header != FLOPS_COLUMN]
        table = format_summary_table(columns, total_parameters, trainable_parameters, model_size, total_training_modes)
        log.info("\n%s", table)
