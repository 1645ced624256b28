"""Live restore progress in a terminal (rich): a line for snapshot bytes downloaded (restore by download,
issue #9; shown once a download started), then a bar per store partition with the changelog records
replayed (after a download: only the tail), rate and ETA, and a line for the whole instance.

    with RestoreProgress(app):
        app.start()
        app.wait_until_running()

It reads ``app.metrics()`` on its own thread every ``refresh_s``: drawing never slows the restore thread.
"""
from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

_TOTAL = "all stores"
_DOWNLOAD = "snapshot download"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA  --"
    seconds = int(seconds + 0.5)
    return f"ETA {seconds // 60:d}:{seconds % 60:02d}"


class RestoreProgress:
    """Shows every store partition restored since it started (at most ``rows_max`` rows, restoring ones
    first) and a total. ``app`` is anything with ``metrics()`` (an :class:`hotstate.App`)."""

    def __init__(self, app: Any, console: Console | None = None, refresh_s: float = 0.25, rows_max: int = 12,
                 transient: bool = False):
        self._app = app
        self._refresh_s = refresh_s
        self._rows_max = rows_max
        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TextColumn("{task.fields[records]:>33}  {task.fields[rate]:>15}  {task.fields[eta]}"),
            console=console, transient=transient, refresh_per_second=max(1.0, 1 / refresh_s))
        self._rows: dict[str, TaskID] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hotstate-restore-progress", daemon=True)

    def __enter__(self) -> "RestoreProgress":
        self._progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.update()
        self._progress.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.update()

    def update(self) -> None:
        """Redraws from one metrics snapshot (the thread calls it; callable directly too)."""
        snap = self._app.metrics()
        downloaded = snap.get("restore_download_bytes_total", 0)
        if downloaded:
            if _DOWNLOAD not in self._rows:
                self._rows[_DOWNLOAD] = self._progress.add_task(_DOWNLOAD, total=None, records="", rate="", eta="")
            self._progress.update(self._rows[_DOWNLOAD], completed=downloaded,
                                  records=f"{_bytes(downloaded)} downloaded",
                                  rate=f"{_bytes(snap.get('restore_download_rate', 0.0))}/s")
        restores: dict[str, dict] = snap.get("restores", {})
        order = sorted(restores, key=lambda k: (restores[k]["state"] != "RESTORING", k))
        done_total = left_total = 0
        for name in order:
            r = restores[name]
            done, left = r["restore_records_total"], r["restore_remaining_records"]
            done_total += done
            left_total += left
            if name not in self._rows:
                if len(self._rows) >= self._rows_max:
                    continue
                self._rows[name] = self._progress.add_task(name, total=None, records="", rate="", eta="")
            self._progress.update(self._rows[name], completed=done, total=done + left,
                                  records=f"{done:,}/{done + left:,} records",
                                  rate=f"{r['restore_records_rate']:,.0f} rec/s",
                                  eta="done" if r["state"] == "RESTORED" else _eta(r["restore_eta_s"]))
        if restores:
            rate = snap.get("restore_records_rate", 0.0)
            if _TOTAL not in self._rows:
                self._rows[_TOTAL] = self._progress.add_task(f"[bold]{_TOTAL}", total=None, records="", rate="",
                                                               eta="")
            self._progress.update(self._rows[_TOTAL], completed=done_total, total=done_total + left_total,
                                  records=f"{done_total:,}/{done_total + left_total:,} records",
                                  rate=f"{rate:,.0f} rec/s",
                                  eta="done" if not left_total else _eta(left_total / rate if rate > 0 else None))
