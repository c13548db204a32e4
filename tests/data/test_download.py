"""Downloads from a local HTTP server / file:// URLs, checksums, pinning and safe extraction."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from ablate.data.download import PIN_SUFFIX, download, extract_archive, file_digest, verify_file
from ablate.exceptions import DataError

PAYLOAD = b"label,text\n" + b"1,some words here\n" * 5000  # ~90 kB: several read chunks


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A static file server on 127.0.0.1 (random port) in a thread; stopped after the test."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "data.csv").write_bytes(PAYLOAD)
    _Handler.requests = []

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.timeout = 5
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


SHA = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_download_verifies_sha256_and_reuses_the_cached_file(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out" / "data.csv"
    assert download(f"{url}/data.csv", dest, sha256=SHA) == dest
    assert dest.read_bytes() == PAYLOAD
    fetched = list(_Handler.requests)  # torchvision resolves redirects, then fetches
    assert fetched and set(fetched) == {"/data.csv"}
    download(f"{url}/data.csv", dest, sha256=SHA)
    assert _Handler.requests == fetched  # verified copy on disk: no second request
    assert not list(dest.parent.glob("*.part-*"))


def test_download_with_md5(server, tmp_path):
    url, _ = server
    dest = tmp_path / "data.csv"
    download(f"{url}/data.csv", dest, md5=MD5)
    assert file_digest(dest, "md5") == MD5


def test_checksum_mismatch_removes_the_file(server, tmp_path):
    url, _ = server
    dest = tmp_path / "data.csv"
    with pytest.raises(DataError, match="checksum mismatch.*removed") as err:
        download(f"{url}/data.csv", dest, sha256="0" * 64)
    assert "\n" not in str(err.value)
    assert not dest.exists()
    left = [p for p in tmp_path.iterdir() if p.suffix != ".lock"]  # the lock file may stay
    assert left == [tmp_path / "served"]  # no partial file left


def test_corrupt_cached_copy_is_fetched_again(server, tmp_path):
    url, _ = server
    dest = tmp_path / "data.csv"
    dest.write_bytes(b"truncated")
    download(f"{url}/data.csv", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert set(_Handler.requests) == {"/data.csv"}


def test_http_error_and_refused_connection_are_one_line_data_errors(server, tmp_path):
    url, _ = server
    with pytest.raises(DataError, match="HTTP 404"):
        download(f"{url}/missing.csv", tmp_path / "x.csv", sha256=SHA)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="could not download") as err:
        download(f"http://127.0.0.1:{port}/a", tmp_path / "y.csv", md5=MD5)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()


def test_without_a_published_checksum_the_first_download_is_pinned(server, tmp_path):
    url, root = server
    dest = tmp_path / "data.csv"
    download(f"{url}/data.csv", dest)
    one_download = len(_Handler.requests)
    pin = Path(str(dest) + PIN_SUFFIX)
    assert pin.read_text().split()[0] == SHA
    verify_file(dest)  # checks against the pin
    dest.write_bytes(PAYLOAD + b"tampered")
    with pytest.raises(DataError, match="expected " + SHA):
        verify_file(dest)
    # A later call notices the tampered copy and fetches the pinned content again.
    download(f"{url}/data.csv", dest)
    assert dest.read_bytes() == PAYLOAD
    assert len(_Handler.requests) == 2 * one_download
    # If the source later serves different bytes, the pin rejects them.
    dest.unlink()
    (root / "data.csv").write_bytes(b"something else")
    with pytest.raises(DataError, match="checksum mismatch"):
        download(f"{url}/data.csv", dest)
    assert not dest.exists()


def test_a_hand_placed_file_without_checksum_is_trusted_and_pinned(tmp_path):
    dest = tmp_path / "placed.csv"
    dest.write_bytes(b"placed by hand")
    # The URL is never contacted: the file is there and nothing contradicts it.
    download("http://127.0.0.1:9/never", dest)
    assert Path(str(dest) + PIN_SUFFIX).read_text().split()[0] == file_digest(dest)


def test_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "copy.bin", sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DataError, match="could not download"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "n.bin", sha256=SHA)


def _tar_gz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_zip_and_tar_gz(tmp_path):
    members = {"corpus/train.csv": b"1,a\n", "corpus/sub/test.csv": b"2,b\n"}
    for archive in (_zip(tmp_path / "a.zip", members), _tar_gz(tmp_path / "a.tgz", members)):
        out = tmp_path / f"out-{archive.suffix}"
        assert extract_archive(archive, out) == out.resolve()
        assert (out / "corpus/train.csv").read_bytes() == b"1,a\n"
        assert (out / "corpus/sub/test.csv").read_bytes() == b"2,b\n"
        # A second call with the same archive finds the marker and writes nothing.
        (out / "corpus/train.csv").unlink()
        extract_archive(archive, out)
        assert not (out / "corpus/train.csv").exists()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: _zip(p / "evil.zip", {"ok.txt": b"x", "../escaped.txt": b"x"}),
        lambda p: _tar_gz(p / "evil.tgz", {"ok.txt": b"x", "../escaped.txt": b"x"}),
        lambda p: _tar_gz(p / "abs.tgz", {"ok.txt": b"x", "/tmp/ablate-escaped.txt": b"x"}),
        lambda p: _tar_gz(p / "link.tgz", {"ok.txt": b"x"}, links={"link": "../../etc"}),
        lambda p: _tar_gz(p / "abslink.tgz", {"ok.txt": b"x"}, links={"link": "/etc/passwd"}),
    ],
)
def test_path_traversal_is_refused_before_anything_is_written(tmp_path, make):
    archive = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="outside|not extracting") as err:
        extract_archive(archive, out)
    assert "\n" not in str(err.value)
    assert list(out.iterdir()) == []  # checked up front: not even ok.txt was written
    assert not (tmp_path / "escaped.txt").exists()
    assert not os.path.exists("/tmp/ablate-escaped.txt")


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match="not a zip or tar archive"):
        extract_archive(junk, tmp_path / "out")
