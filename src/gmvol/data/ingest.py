"""Read a FreeSurfer SUBJECTS_DIR or HCP tree into `subjects.csv`: one row per usable subject,
its T1 and label paths, and the 68 target volumes in mm^3 (aparcstats2table naming)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from gmvol.data.stats import read_aparc_stats
from gmvol.io import InputError, load_t1, load_volume, write_csv
from gmvol.regions import HEMISPHERES, REGION_COLUMNS, REGION_IDS

TargetSource = Literal["aparc+aseg", "aparc.stats"]
TARGET_SOURCES: tuple[str, ...] = typing.get_args(TargetSource)


@dataclass(frozen=True)
class IngestConfig:
    """Where subjects live (the `ingest` params section; defaults equal it). Patterns are relative to one subject's folder; `{subject}` expands to
    its name (HCP: `T1w/{subject}/mri/aparc+aseg.mgz`)."""

    subjects_dir: str = "data/synthetic"
    subject_glob: str = "sub-*"
    t1_pattern: str = "mri/orig.mgz"
    labels_pattern: str = "mri/aparc+aseg.mgz"
    stats_pattern: str = "stats/{hemi}.aparc.stats"
    target_source: TargetSource = "aparc.stats"

    def __post_init__(self) -> None:
        if self.target_source not in TARGET_SOURCES:
            raise ValueError(f"target_source must be one of {list(TARGET_SOURCES)}, got {self.target_source!r}")


def label_volumes(labels_path: Path) -> dict[str, float]:
    """Voxel count of each DK label times the voxel volume (mm^3)."""
    img = load_volume(labels_path, dtype=np.int32)
    data = np.asarray(img.dataobj).ravel()
    voxel_mm3 = float(abs(np.linalg.det(img.affine[:3, :3])))
    counts = np.bincount(data[(data >= 0) & (data <= max(REGION_IDS))], minlength=max(REGION_IDS) + 1)
    missing = [c for c, i in zip(REGION_COLUMNS, REGION_IDS) if counts[i] == 0]
    if missing:
        raise InputError(labels_path, f"label map lacks {len(missing)} DK region(s): {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    return {c: float(counts[i]) * voxel_mm3 for c, i in zip(REGION_COLUMNS, REGION_IDS)}


def stats_volumes(subject_dir: Path, cfg: IngestConfig, subject: str) -> dict[str, float]:
    """GrayVol of both hemispheres' aparc.stats."""
    volumes: dict[str, float] = {}
    for hemi in HEMISPHERES:
        path = subject_dir / cfg.stats_pattern.format(hemi=hemi, subject=subject)
        volumes.update({f"{hemi}_{n}": v for n, v in read_aparc_stats(path, hemi=hemi).items()})
    return volumes


def ingest_subject(subject_dir: Path, cfg: IngestConfig) -> dict[str, object]:
    """One subject's row; raises InputError naming the bad file."""
    subject = subject_dir.name
    t1 = subject_dir / cfg.t1_pattern.format(subject=subject)
    labels = subject_dir / cfg.labels_pattern.format(subject=subject)
    load_t1(t1)  # validates header, values and brain plausibility, so bad scans stop here
    if cfg.target_source == "aparc+aseg":
        volumes = label_volumes(labels)
    else:
        volumes = stats_volumes(subject_dir, cfg, subject)
        if labels.exists():
            label_volumes(labels)
    return {"subject": subject, "t1": str(t1), "labels": str(labels) if labels.exists() else "",
            **volumes}


def ingest(cfg: IngestConfig, subjects_csv: Path, excluded_csv: Path) -> pd.DataFrame:
    """Write subjects.csv and excluded.csv (every excluded subject with its reason)."""
    root = Path(cfg.subjects_dir)
    if not root.is_dir():
        raise InputError(root, "subjects directory not found")
    dirs = sorted(p for p in root.glob(cfg.subject_glob) if p.is_dir())
    if not dirs:
        raise InputError(root, f"subjects directory holds no subject folder matching {cfg.subject_glob!r}")
    rows, excluded = [], []
    for subject_dir in tqdm(dirs, desc="ingest", unit="subject"):
        try:
            rows.append(ingest_subject(subject_dir, cfg))
        except InputError as exc:
            excluded.append({"subject": subject_dir.name, "file": exc.path, "reason": exc.reason})
    write_csv(pd.DataFrame(excluded, columns=["subject", "file", "reason"]), excluded_csv)
    if not rows:  # excluded.csv is written first: the message points at it
        raise InputError(root, f"none of {len(dirs)} subjects is usable; see the reasons in {excluded_csv}")
    table = pd.DataFrame(rows, columns=["subject", "t1", "labels", *REGION_COLUMNS])
    write_csv(table, subjects_csv)
    print(f"ingest: {len(table)} subjects kept, {len(excluded)} excluded (targets: {cfg.target_source})")
    for row in excluded:
        print(f"  excluded {row['subject']}: {row['file']}: {row['reason']}")
    return table
