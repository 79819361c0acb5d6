"""Fault campaign: bad inputs, kill -9 of ranks, stop signals and corrupted state, as a user would meet them.

Builds a small synthetic dataset and an uninterrupted reference run, then runs every case in a
fresh run directory and prints one table row per case: exit code, the first error line, and
whether the final tables equal the reference (to 1e-6) after the documented remedy (rerun the
same command). Bad inputs must exit 2 before any work and leave no run directory behind.

    python scripts/faults.py [--workdir DIR] [--kills 10] [--seed 0]

Not part of the test suite (it takes ~20 minutes on 2 cores); the README quotes its last table.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
LWROI = [sys.executable, "-m", "lwroi.cli"]
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
CONFIG = {
    "data": {"root": "data", "subjects": ["sub01", "sub02"], "rois": ["V1", "FFA", "WB"], "n_train_videos": 60,
             "n_test": 16, "n_videos": 66},
    "features": {"model": "alexnet", "weights": "random", "frame_sampling": "count", "frame_count": 4,
                 "image_size": 64, "reduction": "srp", "reduce_layers": "all", "srp_eps": 0.5,
                 "store_dir": "store"},
    "encoding": {"wc": [0.1, 1.0], "lay": [0.01], "sgd": {"lr": 0.001, "max_epochs": 150, "patience": 150}},
    "run": {"extract_shards": 2, "checkpoint_every": 5},
}


@dataclass
class Row:
    case: str
    code: int | str
    message: str
    tables: str


def lwroi(*args: str, cwd: Path, ranks: int | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [*([MPIEXEC, "-n", str(ranks)] if ranks else []), *LWROI, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def first_error(text: str) -> str:
    """The first error line; for a list of problems ("...:" then indented lines), the first problem."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "error" in line.lower() or "Traceback" in line:
            if line.rstrip().endswith(":") and i + 1 < len(lines):
                return lines[i + 1].strip()[:150]
            return line.strip()[:150]
    return ""


def tables_equal(run: Path, reference: Path) -> bool:
    try:
        for name in ("results.csv", "summary.csv"):
            pd.testing.assert_frame_equal(pd.read_csv(run / name), pd.read_csv(reference / name),
                                          check_exact=False, atol=1e-6, rtol=0)
    except (AssertionError, OSError) as exc:
        print(f"    tables differ: {str(exc)[:200]}", file=sys.stderr)
        return False
    return True


def done_twice(run: Path) -> list[str]:
    events = [json.loads(line) for p in (run / "journal").glob("*.jsonl") for line in p.read_text().splitlines()]
    counts = Counter(e["key"] for e in events if e["event"] == "done")
    return [k for k, v in counts.items() if v > 1]


class Campaign:
    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.rows: list[Row] = []
        self.config = root / "faults.yaml"
        self.config.write_text(yaml.safe_dump(CONFIG))
        self.reference = root / "runs" / "reference"
        self.duration = 0.0
        """Seconds of an uninterrupted 2-rank run: kills and signals land at random moments inside it."""

    def prepare(self) -> None:
        print("building the dataset and the reference run", file=sys.stderr)
        proc = lwroi("synth", "data", "--config", str(self.config), "--subjects", "2", "--videos", "60",
                     "--challenge", "6", cwd=self.root)
        if proc.returncode:
            raise SystemExit(f"lwroi synth failed:\n{proc.stderr[-3000:]}")
        proc = lwroi("run", str(self.config), "--mpi", "none", "--set", f"run.output_dir={self.reference}",
                     cwd=self.root)
        if proc.returncode:
            raise SystemExit(f"reference run failed:\n{proc.stderr[-3000:]}")
        start = time.monotonic()
        proc = lwroi("run", str(self.config), "--set", f"run.output_dir={self.fresh('timing')}", cwd=self.root,
                     ranks=2)
        self.duration = time.monotonic() - start
        if proc.returncode or not tables_equal(self.root / "runs" / "timing", self.reference):
            raise SystemExit(f"the 2-rank run differs from the plain one:\n{proc.stderr[-3000:]}")
        print(f"an uninterrupted 2-rank run takes {self.duration:.0f} s", file=sys.stderr)

    # -- bad inputs ---------------------------------------------------------------------------

    def bad_input(self, case: str, overrides: list[str] = (), mutate: Callable[[Path], None] | None = None,
                  args: list[str] | None = None) -> None:
        """A broken copy of the dataset or config: must exit 2 before work, creating no run directory."""
        data = self.root / "bad" / case.replace(" ", "_")
        shutil.rmtree(data.parent, ignore_errors=True)
        shutil.copytree(self.root / "data", data, symlinks=True)
        if mutate:
            mutate(data)
        out = self.root / "bad-runs" / case.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        base = ["run", str(self.config), "--mpi", "none", "--set", f"data.root={data}",
                "--set", f"run.output_dir={out}"]
        proc = lwroi(*(args or base), *[a for o in overrides for a in ("--set", o)], cwd=self.root)
        clean = "no run dir" if not out.exists() else "RUN DIR CREATED"
        ok = proc.returncode == 2 and not out.exists() and "Traceback" not in proc.stderr
        self.rows.append(Row(case, proc.returncode, first_error(proc.stderr), clean + ("" if ok else "  <-- FAIL")))

    def bad_inputs(self) -> None:
        videos = "AlgonautsVideos268_All_30fpsmax"
        pickles = "participants_data_v2021/mini_track/sub01"

        def rewrite(path: str, change: Callable[[dict], dict]) -> Callable[[Path], None]:
            def mutate(data: Path) -> None:
                target = data / path
                obj = pickle.loads(target.read_bytes())
                target.unlink()
                target.write_bytes(pickle.dumps(change(obj)))
            return mutate

        def first_video(data: Path) -> Path:
            return sorted((data / videos).glob("*.mp4"))[0]

        class Evil:
            def __reduce__(self):
                return (os.system, ("touch /tmp/lwroi-faults-pwned",))

        weights = self.root / "weights"
        weights.mkdir(exist_ok=True)
        torch.save({"w": torch.zeros(3)}, weights / "other.pt")
        (weights / "evil.pt").write_bytes(pickle.dumps(Evil()))
        torch.save(torchvision_state("alexnet"), weights / "alexnet.pt")
        cases: list[tuple[str, list[str], Callable[[Path], None] | None]] = [
            ("missing data root", ["data.root=/nonexistent/lwroi"], None),
            ("missing video folder", [], lambda d: shutil.rmtree(d / videos)),
            ("one training video deleted", [], lambda d: first_video(d).unlink()),
            ("extra video sorting first", [], lambda d: shutil.copy(first_video(d), d / videos / "0000_extra.mp4")),
            ("responses folder missing", [], lambda d: shutil.rmtree(d / "participants_data_v2021")),
            ("one response pickle missing", [], lambda d: (d / pickles / "V1.pkl").unlink()),
            ("response wrong shape", [], rewrite(f"{pickles}/V1.pkl", lambda o: {"train": o["train"][:, 0]})),
            ("response wrong dtype", [], rewrite(f"{pickles}/V1.pkl",
                                                 lambda o: {"train": o["train"].astype(str)})),
            ("response wrong video count", [], rewrite(f"{pickles}/FFA.pkl", lambda o: {"train": o["train"][:50]})),
            ("response not a dict", [], rewrite(f"{pickles}/FFA.pkl", lambda o: [1, 2, 3])),
            ("malicious response pickle", [], lambda d: (d / pickles / "V1.pkl").write_bytes(pickle.dumps(Evil()))),
            ("WB without voxel_mask", [], rewrite("participants_data_v2021/full_track/sub01/WB.pkl",
                                                  lambda o: {"train": o["train"]})),
            ("unknown ROI", ["data.rois=[V1,V9]"], None),
            ("unknown subject", ["data.subjects=[sub01,sub77]"], None),
            ("tune subject not fitted", ["encoding.tune_subjects=[sub09]"], None),
            ("lr infinite", ["encoding.sgd.lr=.inf"], None),
            ("lr nan", ["encoding.sgd.lr=.nan"], None),
            ("lr negative", ["encoding.sgd.lr=-1"], None),
            ("flat solver key of before", ["encoding.lr=0.1"], None),
            ("negative split seed", ["data.split_seed=-1"], None),
            ("device cuda:x", ["run.device=cuda:x"], None),
            ("device cuda:0 without GPU", ["run.device=cuda:0"], None),
            ("more folds than rows", ["encoding.folds=10000"], None),
            ("more extract shards than videos", ["run.extract_shards=100000"], None),
            ("batch size 0", ["encoding.sgd.batch_size=0"], None),
            ("n_test 0", ["data.n_test=0"], None),
            ("n_test above n_train", ["data.n_test=100"], None),
            ("unknown model", ["features.model=alexnett"], None),
            ("unknown layer", ["features.layers=[nope]"], None),
            ("missing weights file", ["features.weights=/nonexistent.pt"], None),
            ("weights sha256 mismatch", [f"features.weights={weights / 'alexnet.pt'}",
                                         "features.weights_sha256=" + "0" * 64], None),
            ("weights of another model", [f"features.weights={weights / 'other.pt'}"], None),
            ("malicious weights file", [f"features.weights={weights / 'evil.pt'}"], None),
            ("unknown reduction", ["features.reduction=foo"], None),
            ("unknown config key", ["encoding.foo=1"], None),
            ("wrong type", ["encoding.wc=abc"], None),
            ("compat not a bool", ["compat=maybe"], None),
        ]
        for case, overrides, mutate in cases:
            self.bad_input(case, overrides, mutate)
        self.bad_input("config file missing", args=["run", str(self.root / "nope.yaml"), "--mpi", "none"])
        (self.root / "broken.yaml").write_text("data: [unclosed\n")
        self.bad_input("config not YAML", args=["run", str(self.root / "broken.yaml"), "--mpi", "none"])
        self.bad_input("bad shard", args=["run", str(self.config), "--mpi", "none", "--shard", "3/2",
                                          "--set", f"run.output_dir={self.root / 'bad-runs' / 'bad_shard'}"])
        if Path("/tmp/lwroi-faults-pwned").exists():
            self.rows.append(Row("malicious pickle executed", "-", "a pickle ran code", "FAIL"))

    # -- interruptions ------------------------------------------------------------------------

    def fresh(self, name: str) -> Path:
        out = self.root / "runs" / name
        shutil.rmtree(out, ignore_errors=True)
        return out

    def launch(self, out: Path) -> subprocess.Popen:
        cmd = [MPIEXEC, "-n", "2", *LWROI, "run", str(self.config), "--set", f"run.output_dir={out}"]
        return subprocess.Popen(cmd, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(self, case: str, out: Path, code: int | str, message: str, *, recomputes: bool = False,
               expect: tuple[int | str, ...] = ()) -> None:
        """Rerun the same command (the documented remedy) and compare with the reference.

        A unit that finished is never done twice, except where the case corrupted it (``recomputes``);
        ``expect`` lists the exit codes the interrupted launch may have.
        """
        proc = lwroi("run", str(self.config), "--set", f"run.output_dir={out}", cwd=self.root, ranks=2)
        twice = [] if recomputes else done_twice(out)
        equal = proc.returncode == 0 and tables_equal(out, self.reference) and not twice
        verdict = "equal" if equal else f"DIFFERENT (rerun exit {proc.returncode}, done twice: {twice[:3]})"
        if expect and code not in expect:
            verdict += f"  <-- FAIL: exit {code}, expected {' or '.join(map(str, expect))}"
        self.rows.append(Row(case, code, message, verdict))

    def moment(self) -> float:
        """A random moment inside an uninterrupted run, counted from its start."""
        return self.rng.uniform(0.15, 0.7) * self.duration

    def rank_pids(self, out: Path) -> dict[int, int]:
        pids = {}
        for marker in (out / "running").rglob("*.json"):
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            pids[info["rank"]] = info["pid"]
        return pids

    def wait_busy(self, job: subprocess.Popen, out: Path, ranks: int, limit: float = 300) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and job.poll() is None:
            if len(self.rank_pids(out)) >= ranks:
                return True
            time.sleep(0.2)
        return False

    def kills(self, n: int) -> None:
        for trial in range(n):
            out = self.fresh(f"kill{trial}")
            start = time.monotonic()
            job = self.launch(out)
            delay = self.moment()
            victim = self.rng.randrange(2)
            busy = self.wait_busy(job, out, 2)
            time.sleep(max(0.0, start + delay - time.monotonic()))
            pids = self.rank_pids(out)
            if not (busy and victim in pids and job.poll() is None):
                job.wait()
                self.rows.append(Row(f"kill -9 rank {victim}", job.returncode, "run ended first", "skipped"))
                continue
            os.kill(pids[victim], signal.SIGKILL)
            what = f"kill -9 rank {victim} after {delay:.0f} s"
            try:
                job.wait(timeout=180)
            except subprocess.TimeoutExpired:
                job.kill()
                self.rows.append(Row(what, "hung", "launcher did not stop within 180 s", "FAIL"))
                continue
            self.finish(what, out, job.returncode, first_error(job.stderr.read()))

    def signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            for target in ("launcher", "rank 0", "rank 1"):
                out = self.fresh(f"{sig.name}-{target.replace(' ', '')}")
                start = time.monotonic()
                job = self.launch(out)
                self.wait_busy(job, out, 2)
                time.sleep(max(0.0, start + self.moment() - time.monotonic()))
                pid = job.pid if target == "launcher" else self.rank_pids(out).get(int(target[-1]))
                if pid is None or job.poll() is not None:
                    job.wait()
                    self.rows.append(Row(f"{sig.name} to the {target}", job.returncode, "run ended first", "skipped"))
                    continue
                os.kill(pid, sig)
                try:
                    code = job.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    job.kill()
                    code = "hung"
                stderr = job.stderr.read()
                message = "Traceback!" if "Traceback" in stderr else first_error(stderr)
                self.finish(f"{sig.name} to the {target}", out, code, message, expect=(75,))

    def corruptions(self) -> None:
        def garble_store(run: Path) -> str:
            arrays = sorted((self.root / "store").rglob("*.npy"))
            target = arrays[len(arrays) // 2]
            data = bytearray(target.read_bytes())
            data[-64:] = bytes(64)
            target.write_bytes(bytes(data))
            return str(target.relative_to(self.root))

        def delete_meta(run: Path) -> str:
            target = next((self.root / "store").rglob("meta.json"))
            target.unlink()
            return str(target.relative_to(self.root))

        def edit_record(run: Path) -> str:
            target = next((run / "units" / "fit").rglob("*.json"))
            record = json.loads(target.read_text())
            record["payload"]["pcc"] = 0.999
            target.write_text(json.dumps(record))
            return str(target.relative_to(run))

        for case, corrupt in (("garbled feature-store array", garble_store), ("deleted store meta.json", delete_meta),
                              ("edited result record", edit_record)):
            out = self.fresh(case.replace(" ", "-"))
            shutil.copytree(self.reference, out)
            what = corrupt(out)
            self.finish(f"{case} ({what})", out, "-", "", recomputes=True)

    def failures(self) -> int:
        return sum(("FAIL" in r.tables) or ("DIFFERENT" in r.tables) for r in self.rows)

    def table(self) -> str:
        width = max(len(r.case) for r in self.rows)
        lines = [f"{'case':<{width}}  exit  {'tables':<12}  message"]
        lines += [f"{r.case:<{width}}  {r.code!s:>4}  {r.tables:<12}  {r.message}" for r in self.rows]
        lines.append(f"{len(self.rows)} cases, {self.failures()} failed")
        return "\n".join(lines)


def torchvision_state(name: str) -> dict:
    import torchvision

    return torchvision.models.get_model(name, weights=None).state_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to work (default: a new temporary folder)")
    parser.add_argument("--kills", type=int, default=10, help="random kill -9 trials (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill and signal timings")
    parser.add_argument("--stages", default="bad,kill,signal,corrupt",
                        help="which stages to run, comma-separated (default: all: bad,kill,signal,corrupt)")
    args = parser.parse_args()
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="lwroi-faults-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(root, random.Random(args.seed))
    campaign.prepare()
    stages = {"bad": campaign.bad_inputs, "kill": lambda: campaign.kills(args.kills), "signal": campaign.signals,
              "corrupt": campaign.corruptions}
    for name in args.stages.split(","):
        stages[name]()
        print(campaign.table(), file=sys.stderr)
    print(campaign.table())
    return 1 if campaign.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
