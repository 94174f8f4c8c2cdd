"""Start-up of a stage command: how long from `reelforge split FILE` starting to the stage's first work
on the file, with and without a Ray kept running for the project (`reelforge ray start`)?

The first work is the first time any process opens the input file: the driver only stats it, the
split task opens it to hash and probe it, so that moment is when a worker starts on it, whichever
process (a worker of the command's own Ray, or of the project's Ray) it is. Linux's inotify tells the
moment without polling. For each mode, `--rounds` runs of one small sample file into a fresh store
(median reported):

  fresh_ray    no Ray running: the command starts its own local Ray (what a first command pays);
  project_ray  `reelforge ray start` ran before (its own start-up reported apart, not counted): the
               command joins that Ray.

Also timed, as references: `reelforge --help` and `reelforge status` (commands that must never start
Ray), and a `python -X importtime` summary of the split command (the driver's slowest imports).
Target: a stage command on a small input begins its work within 3 s (with the project's Ray).

    python -m bench.startup [--rounds 3] [--out FILE]
Writes bench/results/startup.json (or --out) and prints a table; timings on a shared machine are
noisy, so the JSON records the load average.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "startup.json"
TARGET_FIRST_WORK_S = 3.0
_IN_OPEN = 0x20  # inotify: the file was opened


class FirstOpen:
    """When the file is first opened by any process after `start()` (inotify, Linux only)."""

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0 or libc.inotify_add_watch(self._fd, str(path).encode(), _IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {path}")
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> FirstOpen:
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set() and self.at is None:
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if ready:
                self.at = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self._fd)


def reelforge(*args: str, env: dict[str, str] | None = None, importtime: bool = False) -> list[str]:
    flags = ["-X", "importtime"] if importtime else []
    return [sys.executable, *flags, "-m", "pipelines.cli", *args]


def command_env() -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # only what the command finds itself
        env.pop(name, None)
    return env


def timed_split(root: Path, video: Path) -> dict[str, float]:
    """One `reelforge split` of `video` into a fresh store at `root` (a running project Ray is kept)."""
    for table in ("videos.lance", "clips.lance", "_locks"):
        shutil.rmtree(root / table, ignore_errors=True)
    watch = FirstOpen(video).start()
    start = time.monotonic()
    run = subprocess.run(
        reelforge("split", "--root", str(root), str(video)),
        env=command_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    end = time.monotonic()
    watch.close()
    if run.returncode != 0:
        raise SystemExit(f"split failed ({run.returncode}): {run.stderr.strip()[-2000:]}")
    if watch.at is None:
        raise SystemExit("split ran but no process opened the input file")
    return {"first_work_s": watch.at - start, "total_s": end - start}


def wall(args: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(args, env=command_env(), capture_output=True, check=True)
    return time.monotonic() - start


def import_summary(root: Path, video: Path, top: int = 12) -> list[dict[str, Any]]:
    """The split command's slowest top-level imports (cumulative µs, from python -X importtime)."""
    for table in ("videos.lance", "clips.lance", "_locks"):
        shutil.rmtree(root / table, ignore_errors=True)
    run = subprocess.run(
        reelforge("split", "--root", str(root), str(video), importtime=True),
        env=command_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if not name.startswith(" ") and "." not in name:  # top-level packages only
            rows.append({"module": name, "cumulative_ms": int(cumulative) / 1000})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]


def heavy_modules(args: list[str]) -> list[str]:
    """Heavy packages a command imports (checked in a subprocess that runs it and lists sys.modules)."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['reelforge', *{args!r}]\n"
        "try:\n    runpy.run_module('pipelines.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'open_clip', 'vllm'}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=command_env(), capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout.strip().splitlines()[-1].replace("'", '"'))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON results go")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rf-startup-"))
    root = work / "project"
    try:
        subprocess.run(
            reelforge("sample-footage", str(work / "footage")),
            env=command_env(),
            check=True,
            capture_output=True,
        )
        # The shortest sample file: the work is small, so start-up is what the command's time is made of.
        video = min((work / "footage").glob("*.mp4"), key=lambda p: p.stat().st_size)
        result: dict[str, Any] = {"video": video.name, "rounds": args.rounds, "modes": {}}
        result["modes"]["fresh_ray"] = [timed_split(root, video) for _ in range(args.rounds)]
        # On the store the last split left.
        result["help_s"] = wall(reelforge("--help"))
        result["status_s"] = wall(reelforge("status", "--root", str(root)))
        result["heavy_imports"] = {
            "--help": heavy_modules(["--help"]),
            "status": heavy_modules(["status", "--root", str(root)]),
        }
        start = time.monotonic()
        subprocess.run(
            reelforge("ray", "start", "--root", str(root)), env=command_env(), check=True, capture_output=True
        )
        result["ray_start_s"] = time.monotonic() - start
        try:
            result["modes"]["project_ray"] = [timed_split(root, video) for _ in range(args.rounds)]
            result["imports"] = import_summary(root, video)
        finally:
            subprocess.run(
                reelforge("ray", "stop", "--root", str(root)),
                env=command_env(),
                check=False,
                capture_output=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["median"] = {
        mode: {key: statistics.median(r[key] for r in runs) for key in ("first_work_s", "total_s")}
        for mode, runs in result["modes"].items()
    }
    result["target_first_work_s"] = TARGET_FIRST_WORK_S
    result["meets_target"] = result["median"]["project_ray"]["first_work_s"] <= TARGET_FIRST_WORK_S
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"\nstart-up of `reelforge split` on {video.name}, {args.rounds} rounds (median), "
        f"load average {result['load_average']}\n"
    )
    print("| mode | to first work s | whole command s |")
    print("|---|---|---|")
    for mode, m in result["median"].items():
        print(f"| {mode} | {m['first_work_s']:.2f} | {m['total_s']:.2f} |")
    print(
        f"\n`reelforge ray start` (once, not counted above): {result['ray_start_s']:.1f} s; "
        f"`--help` {result['help_s']:.2f} s, `status` {result['status_s']:.2f} s "
        f"(heavy imports: --help {result['heavy_imports']['--help'] or 'none'}, "
        f"status {result['heavy_imports']['status'] or 'none'})"
    )
    print(
        "split's slowest imports on the driver (cumulative ms): "
        + ", ".join(f"{r['module']} {r['cumulative_ms']:.0f}" for r in result["imports"])
    )
    verdict = "met" if result["meets_target"] else "NOT met"
    print(f"target: first work within {TARGET_FIRST_WORK_S:.0f} s with the project's Ray: {verdict}")
    shown = args.out.resolve()
    print(f"results: {shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown}")


if __name__ == "__main__":
    main()
