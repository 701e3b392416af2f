"""Ingestion: read a price CSV from a local path or an http(s) URL, untouched but for headers."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import DataError

log = logging.getLogger(__name__)

REMOTE_TIMEOUT_S = 30


class RemoteReadError(DataError):
    """A URL could not be read; worth retrying, unlike a bad local file."""


@dataclass(frozen=True)
class RawData:
    """The file as read: its text columns untouched, plus where it came from and its digest."""

    frame: pd.DataFrame
    source: str
    digest: str  # sha256 of the bytes read, first 16 hex digits


def is_remote(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def read_bytes(source: str) -> bytes:
    """The raw bytes of a local file or a URL; DataError naming the source when unreadable."""
    if is_remote(source):
        try:
            with urllib.request.urlopen(source, timeout=REMOTE_TIMEOUT_S) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            error = RemoteReadError if exc.code >= 500 or exc.code == 429 else DataError
            raise error(f"{source}: cannot download the data file (HTTP {exc.code} {exc.reason}); "
                        "rule: the URL must serve the CSV file") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteReadError(f"{source}: cannot download the data file ({reason}); "
                                  "rule: the URL must be reachable (tried with retries)") from exc
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: data file not found (looked for {path.resolve()}); "
                        "rule: data.source or --data must name an existing CSV file or an http(s) URL")
    if not path.is_file():
        raise DataError(f"{source}: not a regular file; rule: data.source must name a CSV file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{source}: cannot read the data file ({exc.strerror or exc})") from exc


def parse_csv(content: bytes, source: str) -> pd.DataFrame:
    """Parse CSV bytes into a frame of strings; tolerate a UTF-8 BOM and padded headers."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not a UTF-8 text file (byte {exc.start} cannot be decoded); "
                        "rule: a comma-separated text file in UTF-8") from None
    if not text.strip():
        raise DataError(f"{source}: the file is empty; rule: a header line and at least one data row")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, skipinitialspace=True)
    except (ValueError, csv.Error) as exc:  # pandas' ParserError is a ValueError
        raise DataError(f"{source}: not a readable CSV file ({str(exc).strip()}); "
                        "rule: comma-separated values, the same number of fields on every line") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame.columns) == 1 and len(frame.columns[0]) > 1:
        header = frame.columns[0]
        guess = next((d for d in (";", "\t", "|") if d in header), None)
        hint = f" (it looks delimited by {guess!r})" if guess else ""
        raise DataError(
            f"{source}: found a single column {header!r} on line 1; rule: the file must be "
            f"comma-separated{hint}"
        )
    if frame.empty:
        raise DataError(f"{source}: the file has a header (line 1) but no data rows; "
                        "rule: at least one data row")
    return frame.apply(lambda col: col.str.strip())


def load_prices(source: str) -> RawData:
    """Read the CSV at `source` (path or URL) as text columns with its sha256 digest."""
    content = read_bytes(source)
    digest = hashlib.sha256(content).hexdigest()[:16]
    frame = parse_csv(content, source)
    log.info("read %d rows x %d columns from %s (sha256 %s)", len(frame), frame.shape[1], source, digest)
    return RawData(frame=frame, source=source, digest=digest)
