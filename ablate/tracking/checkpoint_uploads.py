"""When a run's checkpoints reach the MLflow artifact store, off the training thread.

``last.pt`` (model, optimizer, schedules, RNG: about 3x the weights) is written locally
and atomically after every epoch (:class:`~ablate.tracking.checkpoints.Checkpointer`); uploading
it every epoch cost a 300-epoch cct_7 run ~12.6 GiB. :class:`CheckpointUploads` uploads it,
with ``best.pt`` when that changed since the last upload, to the run's ``checkpoints/``
artifacts only:

- every ``--checkpoint-upload-every K`` epochs (default 30: a 300-epoch run uploads 10 times;
  0 = never during training),
- at the end of the run (:meth:`CheckpointUploads.submit` then :meth:`~CheckpointUploads.flush`),
- when the run stops early, on a stop signal or an error (:meth:`CheckpointUploads.upload_now`,
  the hook a signal handler calls), so ``ablate run --resume`` on another machine continues
  from the newest epoch.

Uploads run in one background thread. The training thread only hard-links the files into
a staging folder (microseconds; a copy where links are impossible), so a later epoch's
``os.replace`` never changes what is being uploaded. At most one upload waits: a newer one
replaces it. An upload that fails is reported as a warning and retried at the next
upload point; training is never stopped by the artifact store.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.tracking.checkpoints import ARTIFACT_DIR, BEST, LAST

if TYPE_CHECKING:
    from ablate.tracking import Tracker
    from ablate.tracking.checkpoints import Checkpointer

__all__ = ["CheckpointUploads", "upload_epochs"]

_STAGING = ".upload"


def upload_epochs(epochs: int, every: int) -> list[int]:
    """The epochs after which ``last.pt`` is uploaded (the last one is the end of the run)."""
    due = [e for e in range(1, epochs + 1) if every > 0 and e % every == 0]
    return due if due and due[-1] == epochs else [*due, epochs]


class CheckpointUploads:
    """Background uploads of one run's ``last.pt`` / ``best.pt``.

    Args:
        tracker: the run whose ``checkpoints/`` artifacts receive the files.
        ckpt: the run's local checkpoints.
        every: upload every K epochs during training (0: only at the end or on a stop).

    Attributes:
        bytes_uploaded / uploads: what reached the artifact store so far.
        seconds_blocking: time the training thread spent in :meth:`after_epoch` / :meth:`submit`.
    """

    def __init__(self, tracker: "Tracker", ckpt: "Checkpointer", every: int):
        self.tracker = tracker
        self.ckpt = ckpt
        self.every = max(0, int(every))
        self.bytes_uploaded = 0
        self.uploads = 0
        self.seconds_blocking = 0.0
        self._best_sent: tuple[int, int] | None = None  # (inode, mtime_ns) of the uploaded best
        self._queue: queue.Queue[tuple[int, list[Path]] | None] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._serial = 0
        self._thread: threading.Thread | None = None

    # -- the training thread -------------------------------------------------------------
    def after_epoch(self, epoch: int) -> None:
        """Called once per finished epoch (after ``last.pt`` was written)."""
        if self.every > 0 and epoch % self.every == 0:
            self.submit()

    def submit(self) -> None:
        """Queue an upload of the current ``last.pt`` (and a changed ``best.pt``)."""
        start = time.perf_counter()
        files = self._stage()
        if files:
            self._ensure_thread()
            try:
                _, stale = self._queue.get_nowait()  # a waiting, older upload is superseded
            except queue.Empty:
                pass
            else:
                self._queue.task_done()
                if any(p.name == BEST for p in stale):
                    self._best_sent = None  # its best.pt goes with the next upload
                    files = self._stage_best_again(files)
                shutil.rmtree(stale[0].parent, ignore_errors=True)
            self._queue.put((self._serial, files))
        self.seconds_blocking += time.perf_counter() - start

    def flush(self) -> None:
        """Wait until every queued upload is done."""
        start = time.perf_counter()
        if self._thread is not None:
            self._queue.join()
        self.seconds_blocking += time.perf_counter() - start

    def upload_now(self) -> None:
        """Upload the newest checkpoint and wait (end of run, stop signal, error)."""
        self.submit()
        self.flush()

    def close(self) -> None:
        """Finish queued uploads and stop the thread."""
        self.flush()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def on_stop(self, err: BaseException | None = None) -> None:
        """A run stops early (signal, Ctrl-C, error): upload the newest epoch and stop.

        A pruned trial is never resumed, so nothing is uploaded for it. Never raises: the
        error that stopped the run matters more.
        """
        from ablate.exceptions import Pruned

        try:
            if not isinstance(err, Pruned):
                self.submit()
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def restore_best(self, tmp: str | Path) -> None:
        """Fetch the run's uploaded ``best.pt`` when this machine has none (a resume from
        the artifact store); no error when the run has none yet."""
        if self.ckpt.best_path.is_file():
            return
        try:
            path = self.tracker.download_artifact(f"{ARTIFACT_DIR}/{BEST}", tmp)
        except Exception:  # noqa: BLE001 - no best yet: it is chosen from here on
            return
        self.ckpt.folder.mkdir(parents=True, exist_ok=True)
        os.replace(path, self.ckpt.best_path)
        st = self.ckpt.best_path.stat()
        self._best_sent = (st.st_ino, st.st_mtime_ns)

    # -- staging -------------------------------------------------------------------------
    def _stage(self) -> list[Path]:
        with self._lock:
            self._serial += 1
            folder = self.ckpt.folder / _STAGING / str(self._serial)
        files = []
        if self.ckpt.last_path.is_file():
            files.append(_snapshot(self.ckpt.last_path, folder / LAST))
        best = self.ckpt.best_path
        if best.is_file():
            st = best.stat()
            if (st.st_ino, st.st_mtime_ns) != self._best_sent:
                files.append(_snapshot(best, folder / BEST))
                self._best_sent = (st.st_ino, st.st_mtime_ns)
        return files

    def _stage_best_again(self, files: list[Path]) -> list[Path]:
        if any(p.name == BEST for p in files) or not self.ckpt.best_path.is_file():
            return files
        st = self.ckpt.best_path.stat()
        self._best_sent = (st.st_ino, st.st_mtime_ns)
        return [*files, _snapshot(self.ckpt.best_path, files[0].parent / BEST)]

    # -- the upload thread ---------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"ablate-uploads-{self.tracker.run_id[:8]}", daemon=True
            )
            self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._upload(*item)
            finally:
                self._queue.task_done()

    def _upload(self, serial: int, files: list[Path]) -> None:
        try:
            for path in files:
                size = path.stat().st_size
                self.tracker.log_artifact(path, ARTIFACT_DIR)
                self.bytes_uploaded += size
            self.uploads += 1
        except Exception as err:  # noqa: BLE001 - the store may be down; training goes on
            if any(p.name == BEST for p in files):
                self._best_sent = None  # send it again next time
            first = " ".join(str(err).split())[:200]
            warnings.warn(
                f"run {self.tracker.run_id}: checkpoint upload failed ({first}); "
                "retrying at the next upload point", stacklevel=1,
            )
        finally:
            shutil.rmtree(files[0].parent, ignore_errors=True)


def _snapshot(src: Path, dst: Path) -> Path:
    """A hard link to ``src`` at ``dst`` (a copy when the file system cannot link)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
