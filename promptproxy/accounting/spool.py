"""Finished calls' rows on disk until the database has them.

Rows wait in memory for the recorder's next batch; a worker killed in that time
(SIGKILL, out of memory) would lose them. So each row is first appended to a spool
file in <data dir>/spool/, one JSON line per row, before the call's answer ends.
A write to the page cache survives the death of the process (not a power cut).

Each process owns segments named <owner>.<n>.jsonl, where owner is its pid and a
random suffix, and holds an exclusive `flock` on <owner>.lock for as long as it
lives. The recorder seals the current segment when it takes a batch and removes it
once those rows are committed. At start, `replay` finds the segments of owners
whose lock nobody holds (their process died) and hands their rows to the
database, which inserts them by row id, so a segment replayed after a partial
write never duplicates a row. Files are private to the server's user (0600).
"""

import datetime as dt
import fcntl
import json
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)


def _encode(value):
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    raise TypeError(type(value).__name__)


class Spool:
    def __init__(self, directory):
        self.directory = Path(directory)
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock_fd = None
        self._fd = None  # the segment being appended to
        self._path = None
        self._next = 0

    def open(self):
        """Create the directory and take this process's lock, atomically: the
        lock file appears under its name already locked."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.directory / f".{self.owner}.lock"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temporary, self.directory / f"{self.owner}.lock")
        self._lock_fd = fd
        return self

    def append(self, row):
        """Add one row (a dict of storable values) to the current segment: one
        unbuffered write, so the row is in the file when this returns."""
        line = json.dumps(row, default=_encode, separators=(",", ":")).encode() + b"\n"
        if self._fd is None:
            self._path = self.directory / f"{self.owner}.{self._next}.jsonl"
            self._next += 1
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._fd, line)

    def seal(self):
        """End the current segment (the rows taken for a batch); its path, or None."""
        if self._fd is None:
            return None
        os.close(self._fd)
        path, self._fd, self._path = self._path, None, None
        return path

    @staticmethod
    def remove(paths):
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self):
        """At shutdown, after the last flush. Segments still on disk hold rows not
        committed: unlocked now, they are replayed by the next process to start."""
        self.seal()
        if self._lock_fd is not None:
            if not any(self.directory.glob(f"{self.owner}.*.jsonl")):
                self.remove([self.directory / f"{self.owner}.lock"])
            os.close(self._lock_fd)
            self._lock_fd = None

    def replay(self, write):
        """Hand the rows of every dead owner's segments to `write(rows)`, oldest
        segment first, and remove each once written. One process replays at a time."""
        if not self.directory.is_dir():
            return 0
        replayed = 0
        with open(self.directory / "replay.lock", "a") as guard:
            os.chmod(guard.fileno(), 0o600)
            fcntl.flock(guard, fcntl.LOCK_EX)
            owners = {p.name.split(".")[0] for p in self.directory.glob("*.jsonl")}
            for owner in sorted(owners):
                lock_path = self.directory / f"{owner}.lock"
                try:
                    lock_fd = _claim(lock_path)
                except BlockingIOError:
                    continue  # alive
                try:
                    segments = sorted(self.directory.glob(f"{owner}.*.jsonl"),
                                      key=lambda p: int(p.name.split(".")[1]))
                    for segment in segments:
                        rows = read(segment)
                        if rows:
                            write(rows)
                            replayed += len(rows)
                        self.remove([segment])
                    self.remove([lock_path])
                finally:
                    if lock_fd is not None:
                        os.close(lock_fd)
        if replayed:
            log.info("replayed %d request rows left in the spool by stopped workers", replayed)
        return replayed


def _claim(lock_path):
    """Lock the lock file of an owner that is gone: its descriptor, or None when the
    file is gone too (its owner stopped, or died, after releasing it). Raises
    BlockingIOError while the owner lives and holds it."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    return fd


def live_owners(directory):
    """The owners whose process holds its lock in `directory` now. Every worker of a
    server running on this data dir is one, from the start of its recorder to its
    exit: this is how `app.py restore` knows that the database is in use."""
    alive = []
    for lock_path in sorted(Path(directory).glob("*.lock")):
        if lock_path.name == "replay.lock":
            continue
        try:
            fd = _claim(lock_path)
        except BlockingIOError:
            alive.append(lock_path.stem)
            continue
        if fd is not None:
            os.close(fd)
    return alive


def read(path):
    """The rows of a segment; a line cut short by a crash mid-write is skipped."""
    rows = []
    with open(path, "rb") as segment:
        for line in segment:
            try:
                rows.append(json.loads(line))
            except ValueError:
                log.warning("skipped an incomplete line in %s", path.name)
    return rows
