"""The `gmvol` command line. `gmvol predict` turns T1 scans into a table of the 68 volumes.

Exit status: 0 all scans predicted, 1 some scan failed (the others are still written) or the
output could not be written, 2 a usage problem that stops the run before any scan (bad model,
missing input, bad flag, an --out that would overwrite an input), 3 an internal error (a bug:
--debug shows its traceback), 130/143 stopped by SIGINT/SIGTERM (nothing left half-written; the
scans already done are kept in the ledger beside --out, and the same command resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from gmvol.distributed import parse_address
from gmvol.interrupts import Interrupted, signals_raise
from gmvol.io import InputError, write_json, write_text
from gmvol.ledger import Ledger, file_identity, fingerprint, ledger_path
from gmvol.models.card import synthetic_notice
from gmvol.precision import PRECISIONS
from gmvol.predict import (
    Predictor,
    PredictorSettings,
    ScanResult,
    discover_inputs,
    input_kind,
    rows_table,
    scan_row,
    timings_table,
)


def _version() -> str:
    """The installed package's version (pyproject.toml is its one source)."""
    try:
        return importlib.metadata.version("gmvol")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


EXIT_OK, EXIT_SCAN_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
FORMATS = ("csv", "tsv", "json")
BIDS_VERSION = "1.9.0"
DERIVATIVE_DIR = Path("derivatives") / "gmvol"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmvol", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gmvol {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict", help="regress the 68 Desikan-Killiany gray-matter volumes (mm^3) from T1 scans",
        description="One row per scan: subject, the 68 DK cortical volumes in mm^3 and their total.")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="a T1 file (.nii, .nii.gz, .mgz), a FreeSurfer subject dir (mri/orig.mgz) "
                              "or a BIDS root (sub-*/[ses-*/]anat/*_T1w.nii[.gz])")
    predict.add_argument("--model", required=True, type=Path,
                         help="trained model dir holding model.pt and model.json, e.g. data/models/meshnet")
    predict.add_argument("--out", type=Path, help="output file, written atomically (default: stdout)")
    predict.add_argument("--format", choices=FORMATS,
                         help="table format (default: from --out's suffix, else csv)")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="auto = cuda when available (default: %(default)s)")
    predict.add_argument("--batch-size", type=_positive_int, default=4,
                         help="scans per forward pass (default: %(default)s)")
    predict.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="bf16 autocast: faster on GPUs, within 1%% of fp32 (default: %(default)s)")
    predict.add_argument("--crop-threshold", type=float, default=0.0, metavar="T",
                         help="MeshNet runs only on the bounding box of input voxels above T (normalised "
                              "intensity); 0 skips only exactly empty voxels and changes nothing "
                              "(default: %(default)s); a negative value turns cropping off")
    predict.add_argument("--dask", metavar="ADDRESS",
                         help="spread the scans over a Dask cluster: tcp://HOST:PORT (a running scheduler, "
                              "e.g. dask-jobqueue's SLURMCluster) or local:N (N local worker processes)")
    predict.add_argument("--no-regrid", dest="regrid", action="store_false",
                         help="count every scan on the model's own grid; by default a counting model counts a "
                              "brain outside the sizes it learned on a grid scaled to that brain")
    predict.add_argument("--no-composition", dest="composition", action="store_false",
                         help="report a counting model's raw counts; by default each hemisphere's regional "
                              "shares are pulled toward the training mean by the weight fitted on the "
                              "validation scans (the hemisphere totals are the same either way)")
    predict.add_argument("--seg", type=Path, metavar="DIR",
                         help="also write each scan's label map as DIR/<id>_aparc+aseg.mgz (FreeSurfer LUT "
                              "ids, in the scan's own space and grid); needs a counting model (meshnet_count)")
    predict.add_argument("--verbose", action="store_true", help="per-scan timing on stderr")
    predict.add_argument("--debug", action="store_true", help="show tracebacks with errors")
    predict.add_argument("--bids-derivatives", action="store_true",
                         help=f"with a BIDS root INPUT, also write <root>/{DERIVATIVE_DIR}/volumes.tsv "
                              "and its dataset_description.json")
    predict.set_defaults(run=run_predict)
    return parser


def output_format(out: Path | None, requested: str | None) -> str:
    """The flag wins; else the --out suffix when it names a format; else csv."""
    if requested:
        return requested
    suffix = out.suffix.lower().lstrip(".") if out else ""
    return suffix if suffix in FORMATS else "csv"


def render_table(table: pd.DataFrame, fmt: str) -> str:
    """The volumes table as text; JSON is a list of row objects with columns in table order."""
    if fmt == "json":
        return table.to_json(orient="records", indent=2) + "\n"
    return table.to_csv(sep="\t" if fmt == "tsv" else ",", index=False)


def write_bids_derivative(table: pd.DataFrame, bids_root: Path) -> Path:
    """<root>/derivatives/gmvol/volumes.tsv plus the dataset_description.json BIDS requires."""
    out_dir = bids_root / DERIVATIVE_DIR
    write_text(render_table(table, "tsv"), out_dir / "volumes.tsv")
    write_json({"Name": "gmvol cortical gray-matter volumes", "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative", "GeneratedBy": [{"Name": "gmvol", "Version": _version()}]},
               out_dir / "dataset_description.json")
    return out_dir / "volumes.tsv"


def _error(message: str, exc: BaseException | None = None, debug: bool = False) -> None:
    """One line on stderr (through tqdm so a live bar is not torn); the traceback only if asked."""
    if debug and exc is not None:
        tqdm.write("".join(traceback.format_exception(exc)).rstrip(), file=sys.stderr)
    tqdm.write(f"gmvol predict: {message}", file=sys.stderr)


def _timing_line(result: ScanResult) -> str:
    return (f"{result.subject}: load {result.load_s:.3f} s, preprocess {result.preprocess_s:.3f} s, "
            f"forward {result.forward_s:.3f} s" + (f", label map {result.seg_s:.3f} s" if result.seg_s else ""))


def _bids_root(args: argparse.Namespace) -> Path | None:
    """The BIDS root to write derivatives into, when asked; it must be the only INPUT."""
    if not args.bids_derivatives:
        return None
    root = Path(args.inputs[0])
    if len(args.inputs) != 1 or input_kind(root) != "bids":
        raise ValueError("--bids-derivatives needs a single INPUT that is a BIDS root")
    return root


def _same_file(a: Path, b: Path) -> bool:
    """Same path after symlinks, or the same inode (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def check_out_target(out: Path, inputs: list[Path], model_dir: Path) -> None:
    """Refuse, before any work, an --out that would destroy an input or could not be written:
    an input scan, a file of the model directory, a directory or other non-regular file, or a
    place with no writable directory."""
    if out.exists() and not out.is_file():
        raise InputError(out, "--out exists and is not a regular file (a directory?); name a file")
    model_files = [p for p in model_dir.iterdir() if p.is_file()] if model_dir.is_dir() else []
    for protected in [*inputs, *model_files]:
        if _same_file(out, protected):
            raise InputError(out, f"--out would overwrite the input {protected}")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(out, f"--out cannot be written: {parent} is not a writable directory")


def _write_outputs(args: argparse.Namespace, table: pd.DataFrame, fmt: str, bids_root: Path | None) -> None:
    if args.out:
        write_text(render_table(table, fmt), args.out)
    if bids_root is not None:
        written = write_bids_derivative(table, bids_root)
        print(f"gmvol predict: wrote {written}", file=sys.stderr)
    if not args.out and bids_root is None:
        sys.stdout.write(render_table(table, fmt))


def _report_failures(failures: list[ScanResult], n_scans: int, args: argparse.Namespace) -> None:
    print(f"gmvol predict: {len(failures)} of {n_scans} scan(s) failed:", file=sys.stderr)
    for failed in failures:
        print(f"  {failed.error}", file=sys.stderr)
    if len(failures) == n_scans:
        kept = [str(p) for p in (args.out,) if p is not None and p.exists()]
        print("gmvol predict: no scan could be predicted, so nothing was written"
              + (f" ({kept[0]} is left as it was)" if kept else ""), file=sys.stderr)


def _settings(args: argparse.Namespace) -> PredictorSettings:
    return PredictorSettings(str(args.model), device=args.device, batch_size=args.batch_size,
                             precision=args.precision,
                             crop_threshold=None if args.crop_threshold < 0 else args.crop_threshold,
                             seg_dir=None if args.seg is None else str(args.seg), regrid=args.regrid,
                             composition=args.composition)


def _open_ledger(args: argparse.Namespace, settings: PredictorSettings) -> Ledger | None:
    """The ledger beside --out (none without --out: nothing to resume into)."""
    if not args.out:
        return None
    numbers = {"precision": settings.precision, "crop_threshold": settings.crop_threshold,
               "seg_dir": settings.seg_dir,  # a resumed --seg run must not skip scans without label maps
               "device": settings.device, "regrid": settings.regrid, "composition": settings.composition}
    ledger = Ledger.open(ledger_path(args.out), fingerprint(args.model, numbers))
    return ledger


def _identity(path: Path) -> dict:
    try:
        return file_identity(path)
    except OSError:  # vanished since discovery: it will fail to load, with its reason
        return {"path": str(path)}


def _predict_all(args: argparse.Namespace, scans: list[tuple[str, Path]], settings: PredictorSettings,
                 predictor: Predictor, ledger: Ledger | None) -> tuple[dict[str, dict], list[ScanResult]]:
    """Rows of every scan (from the ledger, or computed now, each committed as it finishes) and
    the results computed now."""
    identities = {subject: _identity(path) for subject, path in scans}
    rows = {s: row for s in identities if ledger and (row := ledger.completed_row(s, identities[s]))}
    todo = [(s, p) for s, p in scans if s not in rows]
    if rows:
        print(f"gmvol predict: {len(rows)} of {len(scans)} scan(s) already done in {ledger.path}; "
              f"predicting the other {len(todo)}", file=sys.stderr)
    reference = predictor.qc_reference
    if args.dask:
        from gmvol.dask_predict import iter_dask_results

        stream = iter_dask_results(todo, settings, args.dask)
    else:
        stream = predictor.iter_files([p for _, p in todo], [s for s, _ in todo])
    results = []
    with tqdm(total=len(todo), desc="predict", unit="scan", file=sys.stderr) as bar:
        for result in stream:
            results.append(result)
            row = scan_row(result, reference) if result.ok else None
            if ledger is not None:
                ledger.record(result.subject, identities[result.subject], row,
                              None if result.ok else str(result.error))
            if row is not None:
                rows[result.subject] = row
            bar.update()
            if not result.ok:
                _error(f"error: {result.error}", result.error, args.debug)
            elif args.verbose:
                bar.write(_timing_line(result), file=sys.stderr)
    return rows, results


def _client_predictor(settings: PredictorSettings) -> Predictor:
    """The model loaded here, on CPU, to check it before any work (the workers load their own)."""
    return Predictor(settings.model_dir, device="cpu", batch_size=settings.batch_size)


def _check(args: argparse.Namespace, scans: list[tuple[str, Path]], settings: PredictorSettings) -> Predictor:
    """Every usage problem, before any work (bad flags, --out, the model directory); the
    predictor that runs the scans here (or, with --dask, checked the model here)."""
    if args.out:
        check_out_target(args.out, [p for _, p in scans], args.model)
    if args.dask:
        parse_address(args.dask)
        return _client_predictor(settings)
    return settings.build()


def _report_qc(table: pd.DataFrame) -> None:
    failed = table.loc[~table["qc_pass"], "subject"].tolist()
    if failed:
        shown = ", ".join(failed[:5]) + (", ..." if len(failed) > 5 else "")
        print(f"gmvol predict: {len(failed)} of {len(table)} predicted scan(s) failed QC (qc_pass false: "
              f"{shown}); see the qc_* columns", file=sys.stderr)


def run_predict(args: argparse.Namespace) -> int:
    """Set up (usage errors exit 2), predict every scan (a bad scan is reported, not fatal),
    committing each to the ledger, then write the table in input order."""
    try:
        scans = discover_inputs(args.inputs)
        bids_root = _bids_root(args)
        fmt = output_format(args.out, args.format)
        settings = _settings(args)
        predictor = _check(args, scans, settings)
    except ValueError as exc:  # InputError and ModelFileError included
        _error(f"error: {exc}", exc, args.debug)
        return EXIT_USAGE
    notice = synthetic_notice(args.model)
    if notice:
        print(f"gmvol predict: {notice}", file=sys.stderr)

    started = time.perf_counter()
    ledger = _open_ledger(args, settings)
    try:
        rows, results = _predict_all(args, scans, settings, predictor, ledger)
    except Interrupted:
        if ledger is not None:
            print(f"gmvol predict: {len(ledger.done)} finished scan(s) are kept in {ledger.path}; "
                  "run the same command again to resume", file=sys.stderr)
        raise
    finally:
        if ledger is not None:
            ledger.close()
    table = rows_table(rows[s] for s, _ in scans if s in rows)
    table = table.round({c: 4 if c.startswith("qc_") else 2 for c in table.columns if c != "subject"})
    failures = [r for r in results if not r.ok]

    if len(table):  # an all-failed run must not replace an earlier --out by an empty table
        try:
            _write_outputs(args, table, fmt, bids_root)
        except OSError as exc:
            _error(f"error: cannot write the results ({exc.strerror or exc}: {exc.filename or ''})", exc,
                   args.debug)
            return EXIT_SCAN_FAILED
        _report_qc(table)

    if args.verbose:
        timings = timings_table(results)
        means = timings[timings["error"] == ""].mean(numeric_only=True)
        print(f"gmvol predict: {len(results)} scan(s) in {time.perf_counter() - started:.2f} s "
              f"({args.dask or predictor.device}); mean per scan: load {means.get('load_s', 0):.3f} s, "
              f"preprocess {means.get('preprocess_s', 0):.3f} s, forward {means.get('forward_s', 0):.3f} s"
              + (f", label map {means.get('seg_s', 0):.3f} s" if args.seg else ""),
              file=sys.stderr)
    if failures:
        _report_failures(failures, len(scans), args)
        return EXIT_SCAN_FAILED
    return EXIT_OK


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel logs its header 'fixes' to stderr; the command's own one-line errors say it all."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gmvol` console script and `python -m gmvol`: one line and an exit
    status for every way a run ends, a traceback only with --debug."""
    args = build_parser().parse_args(argv)
    try:
        with signals_raise(), _quiet_nibabel():
            return int(args.run(args))
    except Interrupted as exc:
        print(f"gmvol {args.command}: stopped by {exc}; no output was left half-written", file=sys.stderr)
        return exc.exit_status
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"gmvol {args.command}: internal error ({type(exc).__name__}: {exc}); "
              "rerun with --debug for the traceback", file=sys.stderr)
        return EXIT_INTERNAL
