"""Parser of FreeSurfer's `?h.aparc.stats` tables (the paper's own code used their GrayVol)."""

from __future__ import annotations

import math
from pathlib import Path

from gmvol.io import InputError
from gmvol.regions import DK_NAMES


def _table_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None


def _stated_hemi(path: Path, line: str, hemi: str | None) -> None:
    """A `# hemi xh` line must name the hemisphere the file is read for (an lh file holding the
    rh table would silently swap 34 targets)."""
    stated = line.split()[2] if len(line.split()) > 2 else ""
    if hemi is not None and stated != hemi:
        raise InputError(path, f"file states '# hemi {stated}' but is read as the {hemi} table")


def _value(path: Path, number: int, where: str, text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"line {number}: {where} is not a number") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise InputError(path, f"line {number}: {where} {text} is not a "
                               f"{'positive ' if positive else ''}finite number")
    return value


def read_aparc_stats(path: str | Path, column: str = "GrayVol", hemi: str | None = None,
                     positive: bool = True) -> dict[str, float]:
    """Return {region name: value} of one column of an aparc.stats file.

    The column is found through the `# ColHeaders` line, as FreeSurfer versions differ in order.
    Refused, as they would be silent wrong targets: non-finite values, values <= 0 when
    `positive` (volumes, areas, thickness; pass False for curvature), a region listed twice, and
    a `# hemi` line that contradicts `hemi`.
    """
    path = Path(path)
    headers: list[str] | None = None
    values: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(_table_lines(path), 1):
        if line.startswith("# ColHeaders"):
            headers = line.split()[2:]
            continue
        if line.startswith("# hemi"):
            _stated_hemi(path, line, hemi)
        if not line.strip() or line.startswith("#"):
            continue
        if headers is None:
            raise InputError(path, "no '# ColHeaders' line before the table; not an aparc.stats file")
        if column not in headers:
            raise InputError(path, f"no {column} column (columns: {' '.join(headers)})")
        fields = line.split()
        if len(fields) != len(headers):
            raise InputError(path, f"line {number} has {len(fields)} fields, expected {len(headers)}")
        if fields[0] in first_line:
            raise InputError(path, f"line {number}: region {fields[0]} is listed twice "
                                   f"(first on line {first_line[fields[0]]})")
        first_line[fields[0]] = number
        values[fields[0]] = _value(path, number, f"{column} of {fields[0]}", fields[headers.index(column)],
                                   positive)
    missing = [n for n in DK_NAMES if n not in values]
    if missing:
        raise InputError(path, f"missing DK region(s): {', '.join(missing)}")
    return {n: values[n] for n in DK_NAMES}
