"""Gzip integrity: a stream is trusted only after every member's CRC-32 and length were checked.

nibabel reads a `.nii.gz`/`.mgz` lazily and stops after the bytes it needs, so a flipped bit in
the compressed data goes unnoticed (seen: 1.9M of 2.1M voxels changed, exit 0). Python's gzip
module checks CRC and ISIZE when it reaches the end of each member, so we read to the end once,
keep the bytes, and hand them to nibabel.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 20


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic number."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def gunzip_verified(path: Path, max_bytes: int) -> io.BytesIO:
    """The whole decompressed stream, CRC and length verified, read in bounded chunks.

    Raises ValueError when the stream is corrupt or truncated, or when it decompresses to more
    than `max_bytes` (a gzip bomb behind a plausible header is stopped there, not in memory).
    """
    out = io.BytesIO()
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                out.write(chunk)
                if out.tell() > max_bytes:
                    raise ValueError(f"gzip stream decompresses to more than the {max_bytes} bytes "
                                     "its header accounts for")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"corrupt gzip stream ({type(exc).__name__}: {exc})") from None
    out.seek(0)
    return out
