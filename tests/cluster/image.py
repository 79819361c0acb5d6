"""The test image, built from containers/lwroi.def with CI's build arguments, in the background.

The build takes minutes and needs nothing from the other tests, so tests/conftest.py starts it as
soon as the session knows it will run a container test, and the cluster tests wait for it. A
failed build still fails those tests.

With pytest-xdist every worker collects the whole suite, so the build lives in a folder of the
session's shared temporary root: the first process to get there starts it (under a file lock),
the others find it, and whichever worker runs the cluster tests waits for its status file. The
build is a process of its own session, so it outlives the worker that started it; the session's
controller removes it at the end (``remove``).

scripts/test.sh starts it even earlier, before it installs the virtual environment (the build and
the install each keep about one core busy), with the machine's own Python: this file needs only
the standard library. ``python3 tests/cluster/image.py start|remove FOLDER``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SECONDS = 1800
# The CI build of containers/README.md: the machine's own wheels and CA bundle (egress proxy).
CI_WHEELHOUSES = ("/opt/pypi-more/files", "/opt/pypi/files")
CI_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class ImageBuild:
    """One ``apptainer build`` in its own folder: ``pid`` while it runs, ``status`` (its exit code) once done."""

    def __init__(self, work: Path) -> None:
        self.work = work

    @property
    def image(self) -> Path:
        return self.work / "lwroi.sif"

    @property
    def log(self) -> Path:
        return self.work / "build.log"

    @property
    def started(self) -> float:
        """When the build started (wall clock)."""
        return (self.work / "pid").stat().st_mtime

    def start(self) -> None:
        """Start the build, once per folder whoever asks first; returns at once."""
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.work / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (self.work / "pid").exists():
                return
            lines = [f"EXTRA_CA_BUNDLE={CI_CA_BUNDLE}" if Path(CI_CA_BUNDLE).is_file() else "EXTRA_CA_BUNDLE="]
            lines.append("WHEELHOUSE=" + " ".join(p for p in CI_WHEELHOUSES if Path(p).is_dir()))
            (self.work / "build.args").write_text("\n".join(lines) + "\n")
            env = {**os.environ, "APPTAINER_CACHEDIR": str(self.work / "cache"), "APPTAINER_TMPDIR": str(self.work)}
            # uncompressed: built for this session only (containers/README.md, CI: 38 CPU-seconds less)
            build = ["apptainer", "build", "--force", "--mksquashfs-args", "-noI -noD -noF -noX",
                     "--build-arg-file", str(self.work / "build.args"), str(self.image), "containers/lwroi.def"]
            # the exit code lands in `status` only once complete (written aside, then renamed)
            script = '"$@"; echo $? > "$STATUS.tmp" && mv "$STATUS.tmp" "$STATUS"'
            with self.log.open("w") as out:
                process = subprocess.Popen(["sh", "-c", script, "build", *build], cwd=REPO, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           env={**env, "STATUS": str(self.work / "status")})  # fmt: skip
            (self.work / "pid").write_text(str(process.pid))

    def wait(self) -> Path:
        """The image, once built; AssertionError with the end of the build log when the build failed."""
        status = self.work / "status"
        while not status.exists():
            if not (self.work / "pid").exists():
                raise AssertionError(f"no image build was started in {self.work}")
            if time.time() - self.started > BUILD_SECONDS:
                tail = self.log.read_text()[-6000:]
                self.remove()
                raise AssertionError(f"apptainer build ran past {BUILD_SECONDS}s; end of {self.log}:\n{tail}")
            time.sleep(1)
        code = int(status.read_text())
        if code != 0:
            raise AssertionError(f"apptainer build failed (exit {code}); end of {self.log}:\n"
                                 f"{self.log.read_text()[-6000:]}")
        return self.image

    def remove(self) -> None:
        """Stop the build if it still runs and delete its folder (the image included)."""
        pid_file = self.work / "pid"
        if pid_file.exists() and not (self.work / "status").exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "remove"):
        sys.exit("usage: python3 tests/cluster/image.py start|remove FOLDER")
    build = ImageBuild(Path(sys.argv[2]))
    build.start() if sys.argv[1] == "start" else build.remove()
