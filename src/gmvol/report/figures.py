"""The figures the report embeds: which evaluate output, alt text and captions, in one place for
loader and page (file names live in `gmvol.layout`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FigureSpec:
    """An evaluation figure: its `EvalFiles` attribute, alt text, caption, and whether it spans the row."""

    file: str
    alt: str
    caption: str
    wide: bool = False


EVAL_FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("normalized_loss_plot",
               "Bar chart of per-region normalized loss: model, mean predictor and total-scaling oracle",
               "Normalized loss per region for the model next to the mean predictor (grey) and the "
               "total-scaling oracle (purple). Where the model's bar is not shorter than the grey one, it "
               "adds nothing over the average brain in that region."),
    FigureSpec("boxplot", "Box plots of absolute error per region, left and right hemisphere",
               "Absolute error |predicted − true| (mm³) per region over the test subjects; left hemisphere "
               "blue, right orange. Large regions have large errors in mm³: see MAE % for relative error."),
    FigureSpec("scatter", "Grid of predicted versus true volume scatter plots for all 68 regions",
               "Predicted vs true volume for all 68 regions, with the identity line and each region's R². "
               "Points along y = x mean individual differences are captured; a flat cloud means the model "
               "predicts a near-constant volume, which a low normalized loss can hide.", wide=True),
    FigureSpec("segmentation", "True and predicted label maps of one test scan, axial and coronal",
               "A counting model's by-product: the first test scan's aparc+aseg (left) and the model's argmax "
               "label map (right), in the scan's own grid, as `gmvol predict --seg` writes it. A regression "
               "model has none."),
)
