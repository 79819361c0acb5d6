"""The test image, built from containers/lwroi.def with CI's build arguments, in the background.

The build takes minutes and needs nothing from the other tests, so tests/conftest.py starts it at
low priority (``nice``) as soon as the session knows it will run a container test, and the cluster
tests, ordered last, wait for it: the build uses the cycles the other tests leave idle (their
subprocess start-ups, MPI launches and file waits). A failed build still fails those tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SECONDS = 1800
# The CI build of containers/README.md: the machine's own wheels and CA bundle (egress proxy).
CI_WHEELHOUSES = ("/opt/pypi-more/files", "/opt/pypi/files")
CI_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass
class ImageBuild:
    """One ``apptainer build`` running in its own temporary folder."""

    work: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)

    @property
    def image(self) -> Path:
        return self.work / "lwroi.sif"

    @property
    def log(self) -> Path:
        return self.work / "build.log"

    def wait(self) -> Path:
        """The image, once built; AssertionError with the end of the build log when the build failed."""
        remaining = BUILD_SECONDS - (time.monotonic() - self.started)
        try:
            code = self.process.wait(timeout=max(remaining, 1))
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"apptainer build ran past {BUILD_SECONDS}s; end of {self.log}:\n"
                                 f"{self.log.read_text()[-6000:]}") from None
        if code != 0:
            raise AssertionError(f"apptainer build failed (exit {code}); end of {self.log}:\n"
                                 f"{self.log.read_text()[-6000:]}")
        return self.image

    def remove(self) -> None:
        """Stop the build if it still runs and delete its folder (the image included)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def start_image_build() -> ImageBuild:
    """Start ``apptainer build`` of containers/lwroi.def at low CPU priority; returns at once."""
    work = Path(tempfile.mkdtemp(prefix="lwroi-image-", dir="/tmp"))
    lines = [f"EXTRA_CA_BUNDLE={CI_CA_BUNDLE}" if Path(CI_CA_BUNDLE).is_file() else "EXTRA_CA_BUNDLE="]
    lines.append("WHEELHOUSE=" + " ".join(p for p in CI_WHEELHOUSES if Path(p).is_dir()))
    (work / "build.args").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "APPTAINER_CACHEDIR": str(work / "cache"), "APPTAINER_TMPDIR": str(work)}
    with (work / "build.log").open("w") as out:
        process = subprocess.Popen(
            ["nice", "-n", "15", "apptainer", "build", "--force", "--mksquashfs-args",
             "-comp zstd -Xcompression-level 3", "--build-arg-file", str(work / "build.args"),
             str(work / "lwroi.sif"), "containers/lwroi.def"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    return ImageBuild(work, process)
