"""Number formatting for the report: few digits, thousands separators, and an explicit dash for gaps.

Tables are read by eye, so every value gets the same precision (3 significant digits) whatever its
magnitude, and an undefined statistic (null in JSON, NaN in a CSV) shows as a dash, never as "nan".
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"
"""Shown for a value that is null, NaN or absent (e.g. Pearson r of a constant predictor)."""


def as_float(value: Any) -> float | None:
    """`value` as a finite float, or None if it is null, NaN, infinite or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_sig(value: Any, digits: int = 3) -> str:
    """`digits` significant digits; thousands separators above 1000, scientific below 0.001."""
    x = as_float(value)
    if x is None:
        return MISSING
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude >= digits - 1:
        return f"{round(x, digits - 1 - magnitude):,.0f}"
    if magnitude < -3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits - 1 - magnitude}f}"


def fmt_mm3(value: Any) -> str:
    """A volume in mm³: whole numbers with thousands separators, 3 significant digits when small."""
    x = as_float(value)
    if x is None or abs(x) < 100:
        return fmt_sig(x)
    return f"{x:,.0f}"


def fmt_share(value: Any) -> str:
    """A share in [0, 1] as a whole percentage."""
    x = as_float(value)
    return MISSING if x is None else f"{100 * x:.0f}%"


def fmt_ratio(ratio: float) -> str:
    """A "how many times" factor: one decimal below 10, none above."""
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:,.0f}x"
