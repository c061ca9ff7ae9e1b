"""The 68 Desikan-Killiany cortical regions: the one source of truth for ids, names and lh/rh pairs.

FreeSurfer's aparc+aseg codes left cortex as 1001-1035 and right as 2001-2035; 1004/2004
(corpus callosum) is not a cortical region and is left out, which leaves 34 per hemisphere.
"""

from __future__ import annotations

DK_NAMES: tuple[str, ...] = (
    "bankssts", "caudalanteriorcingulate", "caudalmiddlefrontal", "cuneus", "entorhinal",
    "fusiform", "inferiorparietal", "inferiortemporal", "isthmuscingulate", "lateraloccipital",
    "lateralorbitofrontal", "lingual", "medialorbitofrontal", "middletemporal", "parahippocampal",
    "paracentral", "parsopercularis", "parsorbitalis", "parstriangularis", "pericalcarine",
    "postcentral", "posteriorcingulate", "precentral", "precuneus", "rostralanteriorcingulate",
    "rostralmiddlefrontal", "superiorfrontal", "superiorparietal", "superiortemporal",
    "supramarginal", "frontalpole", "temporalpole", "transversetemporal", "insula",
)
"""Region names in FreeSurfer's DK order (label id order, corpus callosum skipped)."""

HEMISPHERES: tuple[str, ...] = ("lh", "rh")

LOBES: dict[str, tuple[str, ...]] = {
    "frontal": ("caudalmiddlefrontal", "lateralorbitofrontal", "medialorbitofrontal", "paracentral",
                "parsopercularis", "parsorbitalis", "parstriangularis", "precentral",
                "rostralmiddlefrontal", "superiorfrontal", "frontalpole"),
    "parietal": ("inferiorparietal", "postcentral", "precuneus", "superiorparietal", "supramarginal"),
    "temporal": ("bankssts", "entorhinal", "fusiform", "inferiortemporal", "middletemporal",
                 "parahippocampal", "superiortemporal", "temporalpole", "transversetemporal"),
    "occipital": ("cuneus", "lateraloccipital", "lingual", "pericalcarine"),
    "cingulate": ("caudalanteriorcingulate", "isthmuscingulate", "posteriorcingulate",
                  "rostralanteriorcingulate"),
    "insula": ("insula",),
}
"""Lobe of each DK region (the grouping of Desikan et al. 2006), used to give the synthetic cohort
lobar covariance like real cohorts have."""


def _fs_id(hemi: str, index: int) -> int:
    """FreeSurfer id of the index-th DK region (0-based) in a hemisphere; skips 1004/2004."""
    base = 1000 if hemi == "lh" else 2000
    return base + index + 1 + (index >= 3)


REGION_COLUMNS: tuple[str, ...] = tuple(f"{h}_{n}" for h in HEMISPHERES for n in DK_NAMES)
"""The 68 target column names, aparcstats2table style: lh_bankssts ... rh_insula."""

REGION_IDS: tuple[int, ...] = tuple(_fs_id(h, i) for h in HEMISPHERES for i in range(len(DK_NAMES)))
"""FreeSurfer aparc+aseg label id of each column in REGION_COLUMNS."""

ID_TO_COLUMN: dict[int, str] = dict(zip(REGION_IDS, REGION_COLUMNS))
COLUMN_TO_ID: dict[str, int] = dict(zip(REGION_COLUMNS, REGION_IDS))
N_REGIONS: int = len(REGION_COLUMNS)

LOBE_OF: dict[str, str] = {name: lobe for lobe, names in LOBES.items() for name in names}


def mirror_permutation() -> list[int]:
    """Column permutation that swaps each lh region with its rh twin (for left-right flips)."""
    half = len(DK_NAMES)
    return [i + half if i < half else i - half for i in range(N_REGIONS)]


def hemisphere_columns() -> list[list[int]]:
    """Positions in REGION_COLUMNS of each hemisphere's 34 regions, in HEMISPHERES order."""
    return [[i for i, c in enumerate(REGION_COLUMNS) if hemisphere_and_name(c)[0] == h] for h in HEMISPHERES]


def hemisphere_and_name(column: str) -> tuple[str, str]:
    """Split 'lh_insula' into ('lh', 'insula')."""
    hemi, _, name = column.partition("_")
    return hemi, name
