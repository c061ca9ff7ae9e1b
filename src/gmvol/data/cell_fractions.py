"""Class fractions of the model grid, kept sparse while a training draw is augmented.

A dense (N_CLASSES, D, H, W) float32 copy is 18 MB a subject at 5 mm; flipping, shifting and
zooming it, then filling its background, took 80 ms an item, a third of a training step on 2
cores. Flips, whole-voxel shifts and nearest-cell zooms only move cells, so they act on the few
ten thousand (cell, class, fraction) entries instead, and the dense array is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmvol.data.fractions import SparseFractions
from gmvol.regions import N_REGIONS
from gmvol.tissue import BACKGROUND_CLASS, N_CLASSES, class_mirror_permutation


def _zoom_sources(n: int, factor: float) -> np.ndarray:
    """Per output coordinate along an axis, the input coordinate a zoom by `factor` about the
    centre reads (nearest), or out of [0, n) where it reads from outside the grid."""
    centre = (n - 1) / 2.0
    return np.round(centre + (np.arange(n) - centre) / factor).astype(np.int64)


@dataclass(frozen=True)
class CellFractions:
    """Foreground fractions on a grid of `shape`: entry i puts `value[i]` of cell `cells[:, i]`
    (x, y, z) in class `klass[i]`. Each (cell, class) occurs at most once; background is implied."""

    shape: tuple[int, int, int]
    cells: np.ndarray    # (3, n) int64
    klass: np.ndarray    # (n,) int64
    value: np.ndarray    # (n,) float32

    @classmethod
    def of(cls, sparse: SparseFractions, shape: tuple[int, int, int], cell_mm3: float) -> CellFractions:
        """From the cache's point counts; a cell whose points overfill it (a sample lattice not
        commensurate with the grid) is scaled to sum to 1."""
        value = sparse.count * (sparse.sample_mm3 / cell_mm3)
        total = np.bincount(sparse.index, weights=value, minlength=int(np.prod(shape)))
        value = value / np.maximum(total, 1.0)[sparse.index]
        cells = np.stack(np.unravel_index(sparse.index.astype(np.int64), shape))
        return cls(tuple(int(n) for n in shape), cells, sparse.klass.astype(np.int64), value.astype(np.float32))

    def _with(self, cells: np.ndarray, keep: np.ndarray | slice = slice(None),
              klass: np.ndarray | None = None) -> CellFractions:
        return CellFractions(self.shape, cells[:, keep], (self.klass if klass is None else klass)[keep],
                             self.value[keep])

    def flipped(self) -> CellFractions:
        """Left-right mirror (axis 0), each lh class swapped with its rh twin."""
        cells = self.cells.copy()
        cells[0] = self.shape[0] - 1 - cells[0]
        to_class = np.argsort(np.asarray(class_mirror_permutation()))
        return self._with(cells, klass=to_class[self.klass])

    def shifted(self, offsets: tuple[int, int, int]) -> CellFractions:
        """Translated by whole cells; what leaves the grid is dropped (as a zero-filled shift)."""
        cells = self.cells + np.asarray(offsets, dtype=np.int64)[:, None]
        inside = np.all((cells >= 0) & (cells < np.asarray(self.shape)[:, None]), axis=0)
        return self._with(cells, inside)

    def zoomed(self, factor: float) -> CellFractions:
        """Content scaled by `factor` about the grid centre, by nearest cell (so fractions stay
        fractions): every output cell copies the input cell it reads, and an input cell is copied
        into the block of output cells that read it (none, when zoomed out past it)."""
        starts, counts = [], []
        for axis, n in enumerate(self.shape):
            source = _zoom_sources(n, factor)  # non-decreasing: each input's readers are contiguous
            inside = (source >= 0) & (source < n)
            counts.append(np.bincount(source[inside], minlength=n)[self.cells[axis]])
            starts.append(np.searchsorted(source, np.arange(n))[self.cells[axis]])
        copies = counts[0] * counts[1] * counts[2]
        entry = np.repeat(np.arange(len(copies)), copies)
        rank = np.arange(len(entry)) - np.repeat(np.cumsum(copies) - copies, copies)  # 0.. copies-1
        cy, cz = counts[1][entry], counts[2][entry]
        offsets = (rank // (cy * cz), (rank // cz) % cy, rank % cz)
        cells = np.stack([start[entry] + offset for start, offset in zip(starts, offsets)])
        return CellFractions(self.shape, cells, self.klass[entry], self.value[entry])

    def region_volumes(self, cell_mm3: float) -> np.ndarray:
        """(68,) mm^3 the fractions hold per DK region."""
        regions = self.klass < N_REGIONS
        return np.bincount(self.klass[regions], weights=self.value[regions], minlength=N_REGIONS) * cell_mm3

    def dense(self) -> np.ndarray:
        """(N_CLASSES, *shape) float32, background set to what the other classes leave."""
        n_cells = int(np.prod(self.shape))
        flat = np.ravel_multi_index(tuple(self.cells), self.shape)
        out = np.zeros((N_CLASSES, n_cells), dtype=np.float32)
        out[self.klass, flat] = self.value
        out[BACKGROUND_CLASS] = np.clip(1.0 - np.bincount(flat, weights=self.value, minlength=n_cells), 0.0, 1.0)
        return out.reshape(N_CLASSES, *self.shape)
