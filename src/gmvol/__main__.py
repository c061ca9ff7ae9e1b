"""`python -m gmvol` runs the same command line as the `gmvol` console script."""

from gmvol.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
