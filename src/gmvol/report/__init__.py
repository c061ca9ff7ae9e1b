"""The study report: one self-contained HTML page comparing the models with the trivial baselines."""

from gmvol.report.build import build_report

__all__ = ["build_report"]
