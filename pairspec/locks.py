"""One ingest at a time per store: the writer lock.

Two ingests into one store at once used to lose data silently (both appended from the same committed
count) or, for a new store, leave it broken (the second `create_store` wiped the first's arrays).
Every ingest now holds the store's writer lock from before it opens (or creates) the store until
after its last commit; a second ingest waits for it (`wait=True`, the default; `timeout` seconds at
most) or fails at once with `StoreLocked`, naming the store and the holder.

- Local stores: a POSIX record lock on one byte of `<store>.ingest-lock` (the file the parallel
  writers' chunk locks use, at offsets far below it). The kernel drops it when the holder dies, so
  a killed ingest never leaves a stale lock. The file is removed by the holder, while it still holds
  the lock; a waiter that then gets the lock of a removed file notices (the path no longer names the
  same file) and locks the new one.
- memory:// stores live in one process: a threading lock per URL.
- Other fsspec URLs (s3://, gs://, ...): a lock object `<store>.ingest-lock` created only if absent
  (S3 conditional PUT, fsspec `mode="create"`). A holder killed by SIGKILL leaves it behind: the
  error says who holds it and since when, and that deleting it is safe once that ingest is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from datetime import datetime, timezone

WRITER_OFFSET = 1 << 50  # byte of the lock file that is the writer lock (chunk locks use < 2**41)
_MEMORY_LOCKS: dict[str, threading.Lock] = {}
_MEMORY_GUARD = threading.Lock()


class StoreLocked(RuntimeError):
    """Another ingest holds the store's writer lock."""


def lock_path(store_path: str) -> str:
    """The lock file (or object) of a store, beside it."""
    return str(store_path).rstrip("/") + ".ingest-lock"


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _local_dir(store_path: str) -> str | None:
    p = str(store_path)
    if "://" not in p:
        return p
    return p.removeprefix("file://") if p.startswith("file://") else None


@contextlib.contextmanager
def writer_lock(store_path: str, wait: bool = True, timeout: float | None = None, poll: float = 0.2):
    """Hold the writer lock of the store at `store_path` for the block. StoreLocked if another ingest holds
    it and `wait` is False, or still holds it after `timeout` seconds."""
    local = _local_dir(store_path)
    if local is not None:
        # POSIX record locks do not exclude threads of one process: a threading lock does that
        with _memory_lock(os.path.abspath(local), wait, timeout), _local_lock(local, wait, timeout):
            yield
    elif str(store_path).startswith("memory://"):
        with _memory_lock(str(store_path), wait, timeout):
            yield
    else:
        with _object_lock(str(store_path), wait, timeout, poll):
            yield


def _refused(store_path: str, holder: str, waited: float | None) -> StoreLocked:
    how = f"still held after waiting {waited:.0f} s" if waited else "held"
    return StoreLocked(f"{store_path}: another ingest is writing this store ({how} by {holder}); "
                       "wait for it to finish, then run this ingest again (it resumes)")


@contextlib.contextmanager
def _local_lock(store_path: str, wait: bool, timeout: float | None):
    import fcntl

    path = lock_path(store_path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{store_path}: the folder {parent} does not exist")
    t0 = time.monotonic()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if wait and timeout is None:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, WRITER_OFFSET)
            else:
                while True:
                    try:
                        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, WRITER_OFFSET)
                        break
                    except OSError:
                        waited = time.monotonic() - t0
                        if not wait or waited >= timeout:
                            raise _refused(store_path, _read_holder(path), waited if wait else None) from None
                        time.sleep(0.1)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it: lock the new one
                os.close(fd)
                continue
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        break
    try:
        os.pwrite(fd, json.dumps(_holder()).encode().ljust(256), 0)  # who holds it, for the error above
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still holding the lock: see the module docstring
        os.close(fd)  # releases the lock


def _read_holder(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            info = json.loads(fh.read(256).decode().strip() or "{}")
        return f"process {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextlib.contextmanager
def _memory_lock(url: str, wait: bool, timeout: float | None):
    with _MEMORY_GUARD:
        lock = _MEMORY_LOCKS.setdefault(url.rstrip("/"), threading.Lock())
    ok = lock.acquire(blocking=wait, timeout=-1 if timeout is None or not wait else timeout)
    if not ok:
        raise _refused(url, "another thread of this process", timeout if wait else None)
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _object_lock(url: str, wait: bool, timeout: float | None, poll: float):
    import fsspec

    fs, path = fsspec.core.url_to_fs(lock_path(url))
    body = json.dumps(_holder()).encode()
    t0 = time.monotonic()
    while True:
        try:
            _create_only(fs, path, body)
            break
        except FileExistsError:
            waited = time.monotonic() - t0
            if not wait or (timeout is not None and waited >= timeout):
                try:
                    info = json.loads(fs.cat_file(path))
                    holder = f"process {info['pid']} on {info['host']} since {info['since']}"
                except (OSError, ValueError, KeyError):
                    holder = "another process"
                err = _refused(url, holder, waited if wait else None)
                raise StoreLocked(f"{err} (if no ingest is running any more, delete {lock_path(url)})") from None
            time.sleep(poll)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, FileNotFoundError):
            fs.rm_file(path)


def _create_only(fs, path: str, body: bytes) -> None:
    """Write `body` at `path` only if nothing is there (FileExistsError otherwise): a conditional PUT
    where the filesystem has one; else check, write and read back (a small race remains there)."""
    try:
        fs.pipe_file(path, body, mode="create")
        return
    except (TypeError, NotImplementedError, ValueError):
        pass
    if fs.exists(path):
        raise FileExistsError(path)
    fs.pipe_file(path, body)
    if fs.cat_file(path) != body:
        raise FileExistsError(path)
