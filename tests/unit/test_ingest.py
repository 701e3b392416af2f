"""Reading the CSV: unreadable files fail with the file named; BOM and padded headers pass."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.data.reading import RemoteReadError, load_prices, parse_csv
from pipeline.errors import DataError
from tests.conftest import make_prices


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a temp folder: (base URL, folder)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def message_of(source: str) -> str:
    with pytest.raises(DataError) as info:
        load_prices(source)
    return str(info.value)


def test_reads_a_local_file_as_text_with_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    make_prices(20).to_csv(path, index=False)
    raw = load_prices(str(path))
    assert raw.frame.shape == (20, 7) and raw.source == str(path) and len(raw.digest) == 16
    assert all(str(t) == "str" for t in raw.frame.dtypes)


def test_missing_file(tmp_path: Path) -> None:
    message = message_of(str(tmp_path / "nope.csv"))
    assert "nope.csv: data file not found" in message and str(tmp_path) in message


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    assert "not a regular file" in message_of(str(tmp_path))


@pytest.mark.parametrize(("content", "words"), [
    (b"", ["the file is empty"]),
    (b"  \n\n", ["the file is empty"]),
    (b"Date,Open,High,Low,Close,Adj Close,Volume\n", ["header (line 1) but no data rows"]),
    (make_prices(5).to_csv(index=False, sep=";").encode(), ["single column", "comma-separated", "';'"]),
    (make_prices(5).to_csv(index=False, sep="\t").encode(), ["single column", "'\\t'"]),
    (b"Date,Close\n2021-01-04,1\n2021-01-05,1,2,3\n", ["not a readable CSV", "line 3", "same number of fields"]),
    ("Date,Close\n2021-01-04,caf\xe9\n".encode("latin-1"), ["not a UTF-8 text file"]),
])
def test_unreadable_content_names_the_file_and_the_rule(content: bytes, words: list[str]) -> None:
    with pytest.raises(DataError) as info:
        parse_csv(content, "in.csv")
    assert str(info.value).startswith("in.csv: ")
    for word in words:
        assert word in str(info.value)


def test_bom_and_padded_headers_and_cells_are_tolerated() -> None:
    text = make_prices(5).to_csv(index=False).replace("Date,Open,High", " Date , Open ,  High", 1)
    text = text.replace(",", " , ")
    frame = parse_csv(("\ufeff" + text).encode("utf-8"), "bom.csv")
    assert list(frame.columns) == ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    assert frame["Date"].iloc[0] == "2021-01-04"


def test_a_url_is_read(http_dir: tuple[str, Path]) -> None:
    base, folder = http_dir
    make_prices(20).to_csv(folder / "p.csv", index=False)
    assert len(load_prices(f"{base}/p.csv").frame) == 20


def test_an_unreachable_url_is_a_retryable_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}/x.csv"
    with pytest.raises(RemoteReadError) as info:
        load_prices(url)
    assert url in str(info.value) and "cannot download" in str(info.value)


def test_a_missing_url_is_not_retried(http_dir: tuple[str, Path]) -> None:
    base, _ = http_dir
    with pytest.raises(DataError) as info:
        load_prices(f"{base}/absent.csv")
    assert not isinstance(info.value, RemoteReadError)
    assert "HTTP 404" in str(info.value) and "absent.csv" in str(info.value)
