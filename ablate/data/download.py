"""Checked downloads and safe extraction on torchvision's utilities, and :func:`prepare_lock`.

torchvision (``torchvision.datasets.utils``) fetches (``download_url``: user agent,
redirects, progress bar) and unpacks (``extract_archive``). What ablate adds, measured
against torchvision 0.29:

- SHA-256: torchvision checks only MD5, and writes straight to the destination. Here a file
  is fetched under a temporary name and renamed into place only once its checksum matched,
  so an interrupted or tampered download never looks cached. Where a source publishes no
  checksum, the first download's SHA-256 is pinned in a ``DEST.sha256`` sidecar that every
  later call verifies. Nothing is verified implicitly: only against a given or pinned sum.
- Safe extraction: torchvision extracts tars with no filter (on Python < 3.14 a member
  ``../x``, ``/tmp/x`` or a link is written outside the target) and ``zipfile`` drops a
  ``..`` silently; every member is checked here before anything is written.
- Several processes (study workers, array tasks) may prepare the same data at once:
  :func:`prepare_lock` lets the first one work while the others wait, then reuse its result.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from ablate.exceptions import DataError

__all__ = ["download", "verify_file", "file_digest", "extract_archive", "is_extracted",
           "prepare_lock", "PIN_SUFFIX"]

PIN_SUFFIX = ".sha256"  # sidecar holding the SHA-256 pinned on first download


@contextmanager
def prepare_lock(target: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``TARGET.lock`` while ``target`` is prepared; other processes wait for it.

    Whoever holds the lock checks again whether the work is done before doing it, so the
    second process reuses the first one's result. The lock dies with its process: a killed
    download never blocks the next. ``what`` names the work in the line printed while waiting.
    """
    from filelock import FileLock, Timeout

    path = Path(f"{os.fspath(target)}.lock")
    lock = FileLock(path, is_singleton=True)  # re-entrant within this process
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        print(f"ablate: waiting for another process to finish {what} (lock {path})",
              file=sys.stderr, flush=True)
        lock.acquire()
    except OSError:  # a read-only data folder: nothing can be written there, nothing races
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _expected(path: Path, sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    """(algorithm, digest) to check ``path`` against: the given one, else its pin, else None."""
    if sha256 or md5:
        return ("sha256", sha256.lower()) if sha256 else ("md5", md5.lower())  # type: ignore
    pin = Path(f"{path}{PIN_SUFFIX}")
    if not pin.is_file():
        return None
    fields = pin.read_text().split()
    if not fields:
        raise DataError(f"{pin} is empty; delete it to pin the next download again")
    return "sha256", fields[0].lower()


def verify_file(
    path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None
) -> None:
    """Raise DataError unless ``path`` has the given checksum (or its pinned sidecar one)."""
    path = Path(path)
    expected = _expected(path, sha256, md5)
    if expected is None:
        raise DataError(f"{path}: no checksum given and no pinned {path.name}{PIN_SUFFIX} to "
                        "verify against")
    actual = file_digest(path, expected[0])
    if actual != expected[1]:
        raise DataError(f"{path}: {expected[0]} is {actual}, expected {expected[1]}; "
                        "delete it and download again")


def download(
    url: str, dest: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None
) -> Path:
    """Fetch ``url`` (http(s):// or file://) to ``dest`` unless a verified copy is there.

    Checked against ``sha256`` (preferred) or ``md5``; with neither, against the SHA-256
    pinned by the first download (a file placed by hand before any pin is trusted and
    pinned). A mismatch removes the fetched file and raises a one-line DataError.
    """
    dest = Path(dest)
    with prepare_lock(dest, f"downloading {dest.name}"):
        expected = _expected(dest, sha256, md5)
        if dest.is_file():
            if expected is None:
                Path(f"{dest}{PIN_SUFFIX}").write_text(f"{file_digest(dest)}  {dest.name}\n")
                return dest
            if file_digest(dest, expected[0]) == expected[1]:
                return dest
            dest.unlink()  # a stale or corrupt copy: fetch it again
        tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
        _fetch(url, tmp)
        actual = file_digest(tmp, expected[0] if expected else "sha256")
        if expected is not None and actual != expected[1]:
            tmp.unlink()
            raise DataError(f"checksum mismatch for {url}: {expected[0]} {actual}, expected "
                            f"{expected[1]}; the file was removed")
        os.replace(tmp, dest)
        if expected is None:
            Path(f"{dest}{PIN_SUFFIX}").write_text(f"{actual}  {dest.name}\n")
    return dest


def _fetch(url: str, tmp: Path) -> None:
    """``url`` into ``tmp``; a one-line DataError (and no ``tmp``) when that fails."""
    from torchvision.datasets.utils import download_url

    tmp.unlink(missing_ok=True)
    try:
        if url.startswith("file:"):  # torchvision's downloader cannot read these
            shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), tmp)
        else:
            download_url(url, str(tmp.parent), tmp.name)
    except (OSError, ValueError, RuntimeError, http.client.HTTPException) as err:
        # refused or dropped connections, HTTP errors, full disks, malformed URLs
        tmp.unlink(missing_ok=True)
        if isinstance(err, urllib.error.HTTPError):
            detail = f"HTTP {err.code} {err.reason}"
        else:  # a URLError's reason says most
            detail = _one_line(getattr(err, "reason", err))
        raise DataError(f"could not download {url}: {detail}") from None


def extract_archive(
    archive: str | os.PathLike, dest_dir: str | os.PathLike, *, force: bool = False
) -> Path:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into ``dest_dir``; return ``dest_dir``.

    Absolute paths, ``..`` and links pointing outside ``dest_dir`` are refused (DataError)
    before anything is written. A marker file records a finished extraction, so a second
    call does nothing unless ``force`` (files were deleted since).
    """
    archive, root = Path(archive), Path(dest_dir)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    if not force and is_extracted(archive, root):
        return root
    with prepare_lock(archive, f"extracting {archive.name}"):  # next to the archive
        if force or not is_extracted(archive, root):  # else done by whoever held the lock
            _extract(archive, root)
    return root


def _extract(archive: Path, root: Path) -> None:
    from torchvision.datasets.utils import extract_archive as tv_extract

    _check_members(archive, root)
    tv_extract(str(archive), str(root))
    _marker(archive, root).write_text(_stamp(archive) + "\n")


def _marker(archive: Path, root: Path) -> Path:
    return root / f".extracted-{archive.name}"


def _stamp(archive: Path) -> str:
    st = archive.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def is_extracted(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> bool:
    """True when ``extract_archive`` finished unpacking this very archive into ``dest_dir``."""
    try:
        return _marker(Path(archive), Path(dest_dir)).read_text().strip() == _stamp(Path(archive))
    except OSError:
        return False


def _check_members(archive: Path, root: Path) -> None:
    """Refuse an archive with a member that would be written outside ``root``."""

    def inside(name: str) -> Path:
        pure = PurePosixPath(name.replace("\\", "/"))
        target = (root / pure).resolve()
        if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(root):
            raise DataError(f"{archive}: member {name!r} would be written outside {root}")
        return target

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    inside(info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise DataError(f"{archive}: member {info.filename!r} is a symbolic "
                                        "link; not extracting")
            return
        if not tarfile.is_tarfile(archive):
            raise DataError(f"{archive}: not a zip or tar archive")
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                target = inside(m.name)
                if m.issym():
                    link = (target.parent / m.linkname).resolve()
                    if PurePosixPath(m.linkname).is_absolute() or not link.is_relative_to(root):
                        raise DataError(f"{archive}: link {m.name!r} -> {m.linkname!r} points "
                                        f"outside {root}; not extracting")
                elif m.islnk():
                    inside(m.linkname)  # a hard link names another member
                elif not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: member {m.name!r} is a device or fifo; "
                                    "not extracting")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"{archive}: corrupt archive ({_one_line(err)})") from None
