"""Data files: found in $NIMA_DATA_DIR, else downloaded once into a cache and checksum-verified.

A download goes to a temporary file that is renamed into place only after its checksum
matches, so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from nima.errors import DataError

DATA_DIR_ENV = "NIMA_DATA_DIR"
CACHE_DIR_ENV = "NIMA_CACHE_DIR"


def cache_dir() -> Path:
    """Where downloads and token caches live: $NIMA_CACHE_DIR, else ~/.cache/nima."""
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "nima"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, sha256: str, fix: str) -> None:
    actual = sha256_of(path)
    if actual != sha256:
        raise DataError(
            f"Data file {path} fails its checksum: sha256 {actual}, expected {sha256}. "
            f"The file is corrupt or a different file; {fix}"
        )


def fetch(filename: str, url: str, sha256: str, *, timeout: float = 60.0) -> Path:
    """Path of a verified copy of `filename`: from $NIMA_DATA_DIR, the cache, or `url`."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        path = Path(data_dir) / filename
        if not path.is_file():
            raise DataError(
                f"{DATA_DIR_ENV} is set to {data_dir!r} but {filename} is not there. "
                f"Put the file there, or unset {DATA_DIR_ENV} to download it from {url}."
            )
        _verify(path, sha256, "replace it with the original.")
        return path

    path = cache_dir() / "data" / filename
    if path.is_file():
        _verify(path, sha256, "delete it so NIMA downloads it again.")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                out.write(block)
        _verify(
            tmp, sha256,
            f"the download from {url} was discarded. Fetch the original elsewhere and set "
            f"{DATA_DIR_ENV} to the folder that holds {filename}.",
        )  # fmt: skip
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:  # URLError is an OSError
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"Could not download {filename} from {url}: {exc}. With no network, download it "
            f"elsewhere and set {DATA_DIR_ENV} to the folder that holds {filename} "
            f"(e.g. export {DATA_DIR_ENV}=/path/to/data)."
        ) from None
    except BaseException:  # a bad checksum, Ctrl-C: never leave a partial file behind
        tmp.unlink(missing_ok=True)
        raise
    return path
