"""The ledger of a `gmvol predict --out FILE` run: one JSON line per finished scan, beside FILE.

Each line is written, flushed and fsynced as its scan finishes, so an interrupted run (SIGINT,
SIGTERM, SIGKILL, a lost node) loses at most the scans in flight. A re-run of the same command
reads the ledger and skips every scan recorded as done whose id, path, size and mtime still
match; the final table is built from the ledger's rows, so it is the same table either way. The
first line holds the run's fingerprint (model files' hashes and the settings that change
numbers): a ledger made with another model or settings is set aside and started afresh.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

LEDGER_SUFFIX = ".ledger.jsonl"
FORMAT = "gmvol-predict-ledger/1"


def ledger_path(out: Path) -> Path:
    """volumes.csv -> volumes.csv.ledger.jsonl, in the same directory."""
    return out.with_name(out.name + LEDGER_SUFFIX)


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs' rows comparable: every model file's hash, and the settings."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.suffix in (".pt", ".json"))
    return {"model": {p.name: file_digest(p) for p in files}, "settings": settings}


def file_identity(path: Path) -> dict[str, Any]:
    """How a scan is recognised on a re-run: resolved path, size and mtime (ns)."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass
class Ledger:
    """An append-only ledger file; `done` maps subject -> (identity, row) of completed scans."""

    path: Path
    run: int
    done: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    reused: bool
    _fh: TextIO | None = None

    @classmethod
    def open(cls, path: Path, fingerprint: dict[str, Any]) -> Ledger:
        """Read an existing ledger of the same fingerprint, or start a new one (an old one of
        another fingerprint is renamed to `<path>.old`)."""
        records = read_records(path)
        header = records[0] if records else None
        if header is not None and header.get("fingerprint") != fingerprint:
            os.replace(path, path.with_name(path.name + ".old"))
            records, header = [], None
        done: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for rec in records[1:]:
            if "subject" in rec:
                if rec.get("ok"):
                    done[rec["subject"]] = (rec["identity"], rec["row"])
                else:
                    done.pop(rec["subject"], None)
        run = 1 + max((r.get("run", 0) for r in records if "started" in r), default=0)
        ledger = cls(path, run, done, reused=header is not None)
        if header is None:
            ledger._append({"format": FORMAT, "fingerprint": fingerprint})
        ledger._append({"run": run, "started": datetime.datetime.now().isoformat(timespec="seconds")})
        return ledger

    def completed_row(self, subject: str, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The recorded row of a scan already done with this very file, else None."""
        entry = self.done.get(subject)
        return entry[1] if entry is not None and entry[0] == identity else None

    def record(self, subject: str, identity: dict[str, Any], row: dict[str, Any] | None,
               error: str | None = None) -> None:
        """Commit one finished scan (its row, or its error) durably."""
        entry = {"run": self.run, "subject": subject, "identity": identity, "ok": row is not None}
        self._append({**entry, "row": row} if row is not None else {**entry, "error": error})
        if row is not None:
            self.done[subject] = (identity, row)

    def _append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
        self._fh.write(json.dumps(record, allow_nan=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The ledger's records, header first; a line torn by a kill mid-write (the last one) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records if records and "format" in records[0] else []
