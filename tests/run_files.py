"""Run the test suite as ``make test`` does: one pytest process per test file, several files at a time.

    python tests/run_files.py                 # every tests/test_*.py, 2 files at a time (TEST_JOBS, --jobs)
    python tests/run_files.py tests/test_ppo.py tests/test_gcn.py --jobs 1

One process per file keeps a crash or leak in one file's XLA programs from taking the others down. XLA already
spreads most of a file's work over every core, so two files at a time gain little on a 2-core machine (about 6 %
on this project's: each file then takes 1.6-2x as long) and more with more cores. The files run longest first (the
durations of the last run, kept in ``.pytest_cache/gns_jax_file_seconds.json``; on a fresh clone, file size stands
in); each file's output is printed whole when it ends, then a summary. The exit status is 1 if any file failed.

Most of the suite's time is XLA compiling small programs, so two settings cut it:
- XLA's optimizations are mostly off (``JAX_DISABLE_MOST_OPTIMIZATIONS=1``, for the subprocesses the tests start
  too; ``--optimized`` or a value of your own compiles as a run does). The tests check what the programs compute,
  not how fast; on the 2-core CPU one file (tests/test_agent_loop.py) took 195 s instead of 317 s.
- The files of one run, and the CLI runs they start, share a fresh persistent compilation cache
  (``$GNS_JAX_COMPILATION_CACHE``; ``--no-compilation-cache`` turns it off; it is deleted at the end), so a
  program another file or another test has compiled is loaded instead.
Together, on a fresh clone of this project with both cores free, the 27 files took 532 s instead of 1,679 s (the
earlier run on another 2-core host, partly shared with other jobs); the two were not measured apart.

Neither changes what a test computes beyond float rounding, which the tests' tolerances allow. Two processes at a
time do not change it at all: XLA:CPU's results depend on how many cores a process may use, not on how busy they
are, and each file writes only under its own pytest temporary directory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from gns_jax.runtime import CACHE_ENV  # noqa: E402  (the CLI's cache variable; conftest.py turns it on in-process)

DURATIONS = os.path.join(ROOT, ".pytest_cache", "gns_jax_file_seconds.json")


def load_durations() -> dict[str, float]:
    try:
        with open(DURATIONS) as f:
            return {str(k): float(v) for k, v in json.load(f).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def run_file(path: str, env: dict[str, str]) -> tuple[str, int, float, str]:
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", path], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env)
    return path, proc.returncode, time.time() - start, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="test files (default: tests/test_*.py)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("TEST_JOBS", "2")),
                        help="files run at a time (default: $TEST_JOBS or 2)")
    parser.add_argument("--no-compilation-cache", dest="compilation_cache", action="store_false",
                        help="compile every program in every file (default: the files share a fresh cache)")
    parser.add_argument("--optimized", action="store_true",
                        help="compile with XLA's optimizations, as a run does (default: mostly off)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    files = args.files or sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
    missing = [f for f in files if not os.path.isfile(os.path.join(ROOT, f))]
    if missing:
        parser.error(f"no such test file: {', '.join(missing)}")
    known = load_durations()
    files.sort(key=lambda f: known.get(f, os.path.getsize(os.path.join(ROOT, f)) / 1000.0), reverse=True)

    env = dict(os.environ)
    if not args.optimized:
        env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    cache = tempfile.mkdtemp(prefix="gns_jax_test_jax_cache_") if args.compilation_cache else None
    if cache:
        env[CACHE_ENV] = cache
    start, failed = time.time(), []
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = concurrent.futures.as_completed([pool.submit(run_file, f, env) for f in files])
            for future in results:
                path, code, seconds, output = future.result()
                known[path] = round(seconds, 1)
                print(f"== {path} ({seconds:.0f} s)\n{output.rstrip()}", flush=True)
                if code != 0:
                    failed.append(path)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(os.path.dirname(DURATIONS), exist_ok=True)
    with open(DURATIONS, "w") as f:
        json.dump(known, f, indent=1, sort_keys=True)
    total = time.time() - start
    if failed:
        print(f"== FAILED: {len(failed)} of {len(files)} test files ({', '.join(sorted(failed))}) in {total:.0f} s")
        return 1
    print(f"== all {len(files)} test files passed in {total:.0f} s ({args.jobs} at a time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
