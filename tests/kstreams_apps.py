"""The Java Kafka Streams apps the side-by-side tests run (tests/kstreams_windows, tests/kstreams_joins): a jar
built with Maven when missing or when its sources changed, and the app as a child process whose JSON lines a
thread collects."""
from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import threading
from pathlib import Path


def maven_jar(project: Path, jar: Path) -> Path:
    """``jar``, built with ``mvn package`` in ``project`` when missing or when its sources changed (a hash of
    pom.xml and src/ kept beside the jar); a lock keeps two test processes from building at once."""
    files = [project / "pom.xml", *sorted(p for p in (project / "src").rglob("*") if p.is_file())]
    digest = hashlib.sha256(b"".join(p.relative_to(project).as_posix().encode() + p.read_bytes() for p in files))
    stamp = project / "target" / "sources.sha256"
    stamp.parent.mkdir(exist_ok=True)
    with open(project / "target" / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
            return jar
        proc = subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never", "package"], cwd=project,
                              capture_output=True, text=True, timeout=800)
        assert proc.returncode == 0 and jar.exists(), (
            f"building {project} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        stamp.write_text(digest.hexdigest())
    return jar


class JavaApp:
    """A Kafka Streams app as a child process: ``command`` (java ...), its JSON lines collected by a thread,
    stderr to ``log``; closing stdin stops it."""

    def __init__(self, command: list[str], log: Path):
        self.lines: list[dict] = []
        self._log = open(log, "w")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True)
        self._reader = threading.Thread(target=self._read, name="kstreams-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def events(self, ev: str) -> list[dict]:
        return [line for line in self.lines if line.get("ev") == ev]

    def check_alive(self) -> None:
        if self.proc.poll() is not None or self.events("error"):
            raise AssertionError(f"the Kafka Streams app stopped (exit {self.proc.returncode}): {self.lines}\n"
                                 f"stderr: {Path(self._log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        """Closes stdin and waits for a clean exit."""
        self.proc.stdin.close()
        assert self.proc.wait(60) == 0, f"Kafka Streams exited with {self.proc.returncode}: {self.lines[-5:]}"
        self._reader.join(10)
        self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()
