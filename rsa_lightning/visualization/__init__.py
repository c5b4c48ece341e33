"""Figures of what a run learned and saw: relational kernels, evaluation plots, training clips, run reports.

Every figure is a :class:`matplotlib.figure.Figure` drawn on the Agg canvas (no display, no ``pyplot`` state), saved
as PNG next to the run's other outputs and logged as an image to the run's TensorBoard and W&B loggers
(:mod:`rsa_lightning.visualization.figures`).
"""
