"""fetch(): NIMA_DATA_DIR first, else a verified download into the cache; never a partial file.

Downloads are served from a loopback HTTP server the test starts: no test touches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nima.data.download import fetch
from nima.errors import DataError

CONTENT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = CONTENT if self.path == "/good.txt" else b"tampered"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("NIMA_DATA_DIR", raising=False)
    monkeypatch.setenv("NIMA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


def test_download_verifies_and_caches(server: str, cache: Path) -> None:
    path = fetch("corpus.txt", f"{server}/good.txt", SHA)
    assert path == cache / "corpus.txt" and path.read_bytes() == CONTENT
    assert fetch("corpus.txt", "http://127.0.0.1:9/unused", SHA) == path  # cached: no download


def test_bad_checksum_leaves_nothing(server: str, cache: Path) -> None:
    with pytest.raises(DataError, match="fails its checksum.*discarded.*NIMA_DATA_DIR"):
        fetch("corpus.txt", f"{server}/tampered.txt", SHA)
    assert list(cache.iterdir()) == []


def test_unreachable_explains_nima_data_dir(cache: Path) -> None:
    with pytest.raises(DataError, match="NIMA_DATA_DIR"):
        fetch("corpus.txt", "http://127.0.0.1:9/corpus.txt", SHA, timeout=5)
    assert list(cache.iterdir()) == []


def test_data_dir_is_used_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMA_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="not there"):
        fetch("corpus.txt", "http://127.0.0.1:9/corpus.txt", SHA)
    (tmp_path / "corpus.txt").write_bytes(CONTENT)
    assert fetch("corpus.txt", "http://127.0.0.1:9/corpus.txt", SHA) == tmp_path / "corpus.txt"
    (tmp_path / "corpus.txt").write_bytes(CONTENT + b"!")
    with pytest.raises(DataError, match="fails its checksum"):
        fetch("corpus.txt", "http://127.0.0.1:9/corpus.txt", SHA)
    assert (tmp_path / "corpus.txt").exists()  # the user's file is never deleted
