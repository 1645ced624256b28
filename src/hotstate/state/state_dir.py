"""The state directory: ``<state_dir>/<app_id>/<task_id>/<store>``, locked by one instance at a time."""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid

from ..errors import StateDirError

_TASK_DIR = re.compile(r"\d+_\d+")


class StateDirectory:
    def __init__(self, state_dir: str, app_id: str):
        self.root = os.path.join(os.path.abspath(os.path.expanduser(state_dir)), app_id)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Create the app's directory, prove it writable and take an exclusive lock on it."""
        try:
            os.makedirs(self.root, exist_ok=True)
            fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateDirError(
                f"state_dir {self.root!r} cannot be created or written ({exc.strerror}); "
                "give a state_dir this user can write"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StateDirError(
                f"state_dir {self.root!r} is locked by another running instance of this app; "
                "give each instance its own state_dir"
            ) from exc
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def process_id(self) -> str:
        """This instance's id, kept in the state dir so a restart on the same disk reuses it. Under
        exactly-once it names the transactional producer: the restarted instance fences its own
        predecessor and the broker aborts the predecessor's open transaction at once."""
        path = os.path.join(self.root, "process-id")
        try:
            with open(path) as f:
                pid = f.read().strip()
            if pid:
                return pid
        except FileNotFoundError:
            pass
        pid = uuid.uuid4().hex
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(pid)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise StateDirError(f"cannot write this instance's id to {path} ({exc.strerror}); free space on the "
                                "state_dir's disk or fix its permissions, then start again") from exc
        return pid

    def task_dirs(self) -> list[str]:
        """The ids of the tasks that have a directory here (state on disk), whether they run or not."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _TASK_DIR.fullmatch(n) and os.path.isdir(os.path.join(self.root, n)))

    def store_names(self, task_id: str) -> list[str]:
        """The stores a task has on disk here."""
        path = os.path.join(self.root, task_id)
        try:
            return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))
        except FileNotFoundError:
            return []

    def mark_closed(self, task_id: str) -> None:
        """Stamps the task's directory with the time it was closed here: ``clean_obsolete`` counts from it."""
        path = os.path.join(self.root, task_id)
        if os.path.isdir(path):
            os.utime(path)

    def clean_obsolete(self, running: set[str], delay_ms: int, now_s: float | None = None) -> list[str]:
        """Deletes the directories of tasks not running here that were closed more than ``delay_ms`` ago
        (Kafka Streams' state.cleanup.delay.ms): state of a task that moved away stays that long, to be
        reused if the task comes back. Returns the ids removed."""
        now_s = time.time() if now_s is None else now_s
        removed = []
        for tid in self.task_dirs():
            if tid in running:
                continue
            path = os.path.join(self.root, tid)
            try:
                age_ms = (now_s - os.stat(path).st_mtime) * 1000
            except FileNotFoundError:
                continue
            if age_ms > delay_ms:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(tid)
        return removed

    def store_path(self, task_id: str, store: str) -> str:
        return os.path.join(self.root, task_id, store)
