"""Runs pixbatch and the Python asyncio baseline (bench/baseline.py) on the
same simulated API, one after the other, each against a fresh simulator,
and prints makespan efficiency, CPU time and peak memory side by side.

efficiency = ideal makespan / actual, where the ideal is
(N - 1) / rate + task time + one download: the last row cannot be sent
before (N - 1) / rate, and it then takes the task time and a download.

Usage: sidebyside.py PIXBATCH_BINARY PYTHON ROWS RATE_PER_S [ROWS RATE ...]
Everything runs on 127.0.0.1, in a temporary folder.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

TASK_TIME_S = 2.0
VIDEO_BYTES = 200_000
HERE = os.path.dirname(os.path.abspath(__file__))


def start_simulator(binary):
    process = subprocess.Popen(
        [binary, "simulator", "--port", "0", "--sim-task-time", f"{TASK_TIME_S}s",
         "--sim-video-bytes", str(VIDEO_BYTES)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        process.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return process, match.group(0)


def measured(argv, env):
    """Runs argv; returns (wall seconds, CPU seconds, peak RSS in MiB)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} exited with {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def manifest(path, rows):
    with open(path, "w") as file:
        file.write("id,image,prompt,duration,resolution\n")
        for i in range(rows):
            file.write(f"row-{i},https://cdn.example.com/stills/{i}.png,Shot {i}: a slow pan,5,720p\n")


def run_pair(binary, python, rows, rate, work):
    path = os.path.join(work, f"m{rows}.csv")
    manifest(path, rows)
    env = dict(os.environ, HIGHWAY_API_KEY="bench",
               PIXBATCH_PAID_RECORD=os.path.join(work, "paid.db"))
    results = {}
    for name in ("pixbatch", "python"):
        simulator, base = start_simulator(binary)
        try:
            out = os.path.join(work, f"{name}-{rows}")
            if name == "pixbatch":
                argv = [binary, "run", path, "--base-url", base, "--submit-rate", str(round(rate * 60)),
                        "--poll-rate", str(round(rate * 120)), "--no-check-images", "--yes", "--quiet",
                        "--ledger", os.path.join(work, f"l{rows}.db"), "--out", out]
            else:
                argv = [python, os.path.join(HERE, "baseline.py"), path, out,
                        "--base-url", base, "--rate", str(rate)]
            results[name] = measured(argv, env)
        finally:
            simulator.terminate()
            simulator.wait()
    return results


def main():
    binary, python, *pairs = sys.argv[1:]
    ideal_download_s = 0.01
    print("| run | who | efficiency | wall s | CPU s | CPU ms / video | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as work:
        for rows, rate in zip(pairs[::2], pairs[1::2]):
            rows, rate = int(rows), float(rate)
            ideal = (rows - 1) / rate + TASK_TIME_S + ideal_download_s
            for name, (wall, cpu, rss) in run_pair(binary, python, rows, rate, work).items():
                print(f"| {rows} jobs at {rate:g}/s | {name} | {ideal / wall:.3f} | {wall:.2f} "
                      f"| {cpu:.2f} | {cpu / rows * 1000:.2f} | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
