"""Checksum-verified downloads and safe archive extraction (standard library only).

``download`` streams a URL into a temporary file next to the destination, hashes it on the
fly and renames it into place only when the checksum matches, so an interrupted or
tampered download never looks like a cached file. Where a source publishes no checksum,
the SHA-256 of the first download is pinned in a ``DEST.sha256`` sidecar that every later
call verifies. ``extract_archive`` unpacks zip and tar(.gz/.bz2/.xz) archives after
checking that no member would land outside the target directory.

Several processes (study workers, array tasks on one node or on a shared file system) may
prepare the same data at once. :func:`prepare_lock` serialises them with a ``filelock``
lock file next to the target: the first process downloads or extracts, the others wait and
then find the verified file (or the extraction marker) and reuse it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from ablate.exceptions import DataError

__all__ = [
    "download",
    "verify_file",
    "file_digest",
    "extract_archive",
    "is_extracted",
    "prepare_lock",
    "PIN_SUFFIX",
]

PIN_SUFFIX = ".sha256"  # sidecar holding the SHA-256 pinned on first download
_CHUNK = 1 << 20
_USER_AGENT = "ablate/0.1 (Python urllib)"


@contextmanager
def prepare_lock(target: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``TARGET.lock`` while ``target`` is prepared; other processes wait for it.

    Whoever holds the lock checks again whether the work is done (a verified file, an
    extraction marker, a cache) before doing it, so the second process reuses the first
    one's result. The lock dies with its process: a killed download never blocks the next.

    Args:
        target: the file or folder being prepared; the lock file is ``target`` + ``.lock``.
        what: what is prepared, for the one line printed while waiting.
    """
    from filelock import FileLock, Timeout

    path = Path(f"{os.fspath(target)}.lock")
    lock = FileLock(path, is_singleton=True)  # re-entrant within this process
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        print(
            f"ablate: waiting for another process to finish {what} (lock {path})",
            file=sys.stderr,
            flush=True,
        )
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
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return None


def _read_pin(pin: Path) -> str:
    fields = pin.read_text().split()
    if not fields:
        raise DataError(f"{pin} is empty; delete it to pin the next download again")
    return fields[0].lower()


def verify_file(
    path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None
) -> None:
    """Raise DataError unless ``path`` has the given checksum (or its pinned sidecar one).

    Args:
        path: file to check.
        sha256: expected SHA-256 hex digest (preferred when both are given).
        md5: expected MD5 hex digest.
    """
    path = Path(path)
    expected = _expected(sha256, md5)
    if expected is None:
        pin = Path(str(path) + PIN_SUFFIX)
        if not pin.is_file():
            raise DataError(
                f"{path}: no checksum given and no pinned {pin.name} to verify against"
            )
        expected = ("sha256", _read_pin(pin))
    algorithm, digest = expected
    actual = file_digest(path, algorithm)
    if actual != digest:
        raise DataError(
            f"{path}: {algorithm} is {actual}, expected {digest}; delete it and download again"
        )


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is already there; return ``dest``.

    The data is streamed into ``DEST.part-PID`` and renamed into place only after its
    checksum matched; on a mismatch the partial file is removed and DataError raised. With
    neither ``sha256`` nor ``md5`` the SHA-256 of the first download is pinned in
    ``DEST.sha256`` and later calls verify the cached file against it.

    Args:
        url: http(s):// or file:// URL.
        dest: destination file path.
        sha256: expected SHA-256 hex digest.
        md5: expected MD5 hex digest (used when no SHA-256 is published).
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.
    """
    dest = Path(dest)
    with prepare_lock(dest, f"downloading {dest.name}"):
        return _download(url, dest, _expected(sha256, md5), progress, timeout)


def _download(
    url: str, dest: Path, expected: tuple[str, str] | None, progress: bool, timeout: float
) -> Path:
    """:func:`download` under its lock: reuse a verified ``dest`` or fetch it."""
    pin = Path(str(dest) + PIN_SUFFIX)
    pin_after = False
    if expected is None:
        if pin.is_file():
            expected = ("sha256", _read_pin(pin))  # pinned by an earlier download
        else:
            pin_after = True
    if dest.is_file():
        if expected is None:
            # Placed by hand before any pin existed: trust it and pin it now.
            pin.write_text(f"{file_digest(dest)}  {dest.name}\n")
            return dest
        if file_digest(dest, expected[0]) == expected[1]:
            return dest
        dest.unlink()  # a stale or corrupt copy: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    algorithm = expected[0] if expected else "sha256"
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    actual = _fetch(url, tmp, algorithm, progress, timeout)
    if expected is not None and actual != expected[1]:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {url}: {algorithm} {actual}, expected {expected[1]}; "
            "the file was removed"
        )
    os.replace(tmp, dest)
    if pin_after:
        pin.write_text(f"{actual}  {dest.name}\n")
    return dest


def _fetch(url: str, tmp: Path, algorithm: str, progress: bool, timeout: float) -> str:
    """Stream ``url`` into ``tmp``; return its hex digest (``tmp`` is removed on errors)."""
    hasher = hashlib.new(algorithm)
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            bar = _progress_bar(progress, total, tmp.name.split(".part-")[0])
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if total is not None and received != total:
            raise DataError(
                f"download of {url} stopped after {received} of {total} bytes; try again"
            )
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as err:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {_one_line(err.reason)}") from None
    except (OSError, ValueError, http.client.HTTPException) as err:
        # timeouts, refused or dropped connections, full disks, malformed URLs
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {_one_line(err)}") from None
    return hasher.hexdigest()


def _progress_bar(enabled: bool, total: int | None, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: no carriage-return bar in log files (stderr not a terminal)
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        leave=False,
        disable=None,
    )


def _check_member(name: str, root: Path, archive: Path) -> Path:
    """The extraction target of an archive member; DataError if it escapes ``root``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    target = (root / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(root):
        raise DataError(
            f"{archive}: member {name!r} would be written outside {root}; not extracting"
        )
    return target


def extract_archive(
    archive: str | os.PathLike, dest_dir: str | os.PathLike, *, force: bool = False
) -> Path:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into ``dest_dir``; return ``dest_dir``.

    Every member is checked before anything is written: absolute paths, ``..`` components
    and links pointing outside ``dest_dir`` are refused (DataError). A marker file records
    a finished extraction so a second call with the same archive does nothing.

    Args:
        archive: the archive file.
        dest_dir: directory to extract into (created if missing).
        force: extract even if the marker says it was done (files were deleted since).
    """
    archive, root = Path(archive), Path(dest_dir)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    if not force and is_extracted(archive, root):
        return root
    with prepare_lock(archive, f"extracting {archive.name}"):  # next to the archive
        if not force and is_extracted(archive, root):  # done by whoever held the lock
            return root
        _extract(archive, root)
    return root


def _extract(archive: Path, root: Path) -> None:
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, root)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, root)
    else:
        raise DataError(f"{archive}: not a zip or tar archive")
    _marker(archive, root).write_text(_stamp(archive) + "\n")


def _marker(archive: Path, root: Path) -> Path:
    return root / f".extracted-{archive.name}"


def _stamp(archive: Path) -> str:
    st = archive.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def is_extracted(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> bool:
    """True when ``extract_archive`` finished unpacking this very archive into ``dest_dir``."""
    archive, marker = Path(archive), _marker(Path(archive), Path(dest_dir))
    try:
        return marker.read_text().strip() == _stamp(archive)
    except OSError:
        return False


def _extract_zip(archive: Path, root: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(info.filename, root, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(
                        f"{archive}: member {info.filename!r} is a symbolic link; not extracting"
                    )
            for info in members:
                zf.extract(info, root)
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive}: corrupt zip archive ({_one_line(err)})") from None


def _extract_tar(archive: Path, root: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                target = _check_member(m.name, root, archive)
                if m.issym():
                    link = PurePosixPath(m.linkname)
                    resolved = (target.parent / link).resolve()
                    if link.is_absolute() or not resolved.is_relative_to(root):
                        raise DataError(
                            f"{archive}: link {m.name!r} -> {m.linkname!r} points outside {root}; "
                            "not extracting"
                        )
                elif m.islnk():
                    # Hard links name another member, relative to the archive root.
                    _check_member(m.linkname, root, archive)
                elif not (m.isfile() or m.isdir()):
                    raise DataError(
                        f"{archive}: member {m.name!r} is a device or fifo; not extracting"
                    )
            if hasattr(tarfile, "data_filter"):
                # Python's own 'data' filter as a second line of defence (3.10.12+/3.11.4+).
                tf.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - old interpreters; the checks above already ran
                tf.extractall(root, members=members)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{archive}: corrupt or unsafe tar archive ({_one_line(err)})") from None
