"""Pick the best, a typical and the worst region, as the paper's saliency figures do."""

from __future__ import annotations

import pandas as pd


def select_regions(region_table: pd.DataFrame, column: str = "normalized_loss") -> dict[str, str]:
    """Region names with the lowest, median and highest `column` (NaN rows skipped).

    Regions come from a `region` column if present, else the index. The median is the lower
    middle of the sorted list, so it is always a real region; ties break by name for determinism.
    """
    if column not in region_table.columns:
        raise ValueError(f"region table has no column {column!r}; columns: {list(region_table.columns)}")
    names = region_table["region"] if "region" in region_table.columns else region_table.index
    ranked = (pd.DataFrame({"region": list(names), "value": region_table[column].to_numpy()})
              .dropna(subset=["value"]).sort_values(["value", "region"], kind="stable"))
    if ranked.empty:
        raise ValueError(f"column {column!r} has no finite values")
    order = ranked["region"].astype(str).tolist()
    return {"best": order[0], "median": order[(len(order) - 1) // 2], "worst": order[-1]}
