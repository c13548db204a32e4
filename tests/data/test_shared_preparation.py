"""Two worker processes preparing the same data at once: one downloads and extracts, the
other waits on the lock file and reuses the result (issue 17).

The downloads are real (a ``file://`` URL through ablate's downloader; a local HTTP server
for torchvision, whose downloader cannot read ``file://``) into a shared data folder. Each
child process counts the fetches and extractions it performed in a shared log file, and
each fetch is slowed down so the second process surely arrives while the first works.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import struct
import tarfile
import threading
import time
from pathlib import Path

import pytest
from cli_process import PIPE, CliProcess  # tests/ helper, not collected

ROOT = Path(__file__).resolve().parents[2]

def _corpus_child(argv: list[str]) -> int:
    """One worker: ensure the fake corpus (argv: log, url, sha256, data folder, go file)."""
    import ablate.data.download as dl
    from ablate.data.text.corpora import CorpusSpec, RemoteFile, ensure_corpus

    log, url, sha, data, go = argv
    dl._fetch = _counted(log, "fetch", dl._fetch, delay=1.0)  # a slow network / disk: the
    dl._extract = _counted(log, "extract", dl._extract, delay=1.0)  # other arrives meanwhile
    spec = CorpusSpec("fake", (RemoteFile(url, "fake.tar.gz", sha, None, True),),
                      ("fake/train.csv", "fake/test.csv"), None)  # fmt: skip
    _wait_for(Path(go))
    root = ensure_corpus(spec, data, download=True)
    print((root / "fake" / "train.csv").read_text().strip())
    return 0


def _mnist_child(argv: list[str]) -> int:
    """One worker: read MNIST through torchvision (argv: log, mirror, resources, data, go)."""
    import torchvision.datasets as tvd
    import torchvision.datasets.mnist as mnist

    from ablate.data.readers import read_torchvision

    log, mirror, resources, data, go = argv
    mnist.download_and_extract_archive = _counted(log, "fetch+extract",
                                                  mnist.download_and_extract_archive, delay=0.3)
    tvd.MNIST.mirrors = [mirror]
    tvd.MNIST.resources = [tuple(r.split(":")) for r in resources.split(",")]
    _wait_for(Path(go))
    raw = read_torchvision("mnist", Path(data), True)
    print(tuple(raw.train.x.shape), tuple(raw.test.x.shape))
    return 0


def _counted(log: str, name: str, fn, delay: float):
    """``fn``, writing ``name`` to ``log`` and waiting ``delay`` seconds before each call."""

    def wrapper(*args, **kwargs):
        with open(log, "a") as f:
            f.write(name + "\n")
        time.sleep(delay)
        return fn(*args, **kwargs)

    return wrapper


def _wait_for(go: Path) -> None:
    while not go.exists():
        time.sleep(0.01)


def _start(child, *args: object) -> CliProcess:
    """``child(args)`` in a process of its own (forked from a preloaded interpreter)."""
    return CliProcess([str(a) for a in args], cwd=ROOT, stdout=PIPE, stderr=PIPE,
                      env={**os.environ, "OMP_NUM_THREADS": "1"},
                      main=f"{__name__}:{child.__name__}")  # fmt: skip


def _run_two(child, *args: object, go: Path) -> list[tuple[str, str]]:
    procs = [_start(child, *args, go) for _ in range(2)]
    time.sleep(0.5)  # both processes started
    go.touch()
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return outs


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.slow
def test_two_workers_download_and_extract_a_corpus_once(tmp_path):
    archive = _tar_gz({"fake/train.csv": b"1,hello\n", "fake/test.csv": b"2,world\n"})
    served = tmp_path / "served" / "fake.tar.gz"
    served.parent.mkdir()
    served.write_bytes(archive)
    log, data = tmp_path / "events.log", tmp_path / "data"
    outs = _run_two(
        _corpus_child,
        log,
        served.as_uri(),
        hashlib.sha256(archive).hexdigest(),
        data,
        go=tmp_path / "go",
    )
    assert sorted(log.read_text().split()) == ["extract", "fetch"]
    assert [out.strip() for out, _ in outs] == ["1,hello", "1,hello"]
    # one of them said it waited for the other
    assert sum("waiting for another process" in err for _, err in outs) == 1
    assert not list((data / "fake").glob("*.part-*"))


def _silent(*args: object) -> None:
    pass


def _idx(magic: int, array: bytes, *dims: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    return gzip.compress(header + array)  # the IDX format of MNIST


@pytest.mark.slow
def test_two_workers_download_a_torchvision_set_once(tmp_path):
    pytest.importorskip("torchvision")
    served = tmp_path / "served"
    served.mkdir()
    files = {
        "train-images-idx3-ubyte.gz": _idx(2051, bytes(range(12)) * (28 * 28), 12, 28, 28),
        "train-labels-idx1-ubyte.gz": _idx(2049, bytes(i % 10 for i in range(12)), 12),
        "t10k-images-idx3-ubyte.gz": _idx(2051, bytes(range(4)) * (28 * 28), 4, 28, 28),
        "t10k-labels-idx1-ubyte.gz": _idx(2049, bytes(range(4)), 4),
    }
    resources = []
    for name, data in files.items():
        (served / name).write_bytes(data)
        resources.append(f"{name}:{hashlib.md5(data).hexdigest()}")
    log, data_dir = tmp_path / "events.log", tmp_path / "data"
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": _silent})
    handler = functools.partial(quiet, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        outs = _run_two(
            _mnist_child,
            log,
            f"http://127.0.0.1:{httpd.server_address[1]}/",
            ",".join(resources),
            data_dir,
            go=tmp_path / "go",
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert log.read_text().split() == ["fetch+extract"] * 4  # one worker, each file once
    assert [out.strip() for out, _ in outs] == ["(12, 1, 28, 28) (4, 1, 28, 28)"] * 2
