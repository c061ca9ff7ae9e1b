"""Parser of FreeSurfer's `?h.aparc.stats` tables (the paper's own code used their GrayVol)."""

from __future__ import annotations

from pathlib import Path

from gmvol.io import InputError
from gmvol.regions import DK_NAMES


def read_aparc_stats(path: str | Path, column: str = "GrayVol") -> dict[str, float]:
    """Return {region name: value} of one column of an aparc.stats file.

    The column is found through the `# ColHeaders` line, as FreeSurfer versions differ in order.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    headers: list[str] | None = None
    values: dict[str, float] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.startswith("# ColHeaders"):
            headers = line.split()[2:]
            continue
        if not line.strip() or line.startswith("#"):
            continue
        if headers is None:
            raise InputError(path, "no '# ColHeaders' line before the table; not an aparc.stats file")
        if column not in headers:
            raise InputError(path, f"no {column} column (columns: {' '.join(headers)})")
        fields = line.split()
        if len(fields) != len(headers):
            raise InputError(path, f"line {number} has {len(fields)} fields, expected {len(headers)}")
        try:
            values[fields[0]] = float(fields[headers.index(column)])
        except ValueError:
            raise InputError(path, f"line {number}: {column} is not a number") from None
    missing = [n for n in DK_NAMES if n not in values]
    if missing:
        raise InputError(path, f"missing DK region(s): {', '.join(missing)}")
    return {n: values[n] for n in DK_NAMES}
