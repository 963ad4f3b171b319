"""How long `py-spy dump` stops a target: non-blocking (hangdoc's default) against --native (`capture --native`).

A target process runs a thread that wakes every 0.5 ms and records the longest gap between two wake-ups;
a dump that pauses the process shows up as a gap that long. The figure printed per mode is the median and the
largest gap over --repeat dumps, next to the gap seen with no dump at all (the machine's own noise).
Run: python benchmarks/native_pause.py [--repeat 5] [--torch]   (--torch: the target imports torch first, so
py-spy has large native libraries to unwind through)
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET = """
import sys, threading, time
if {torch}:
    import torch  # noqa: F401
gap = 0.0
def tick():
    global gap
    last = time.perf_counter()
    while True:
        now = time.perf_counter()
        gap = max(gap, now - last)
        last = now
        time.sleep(0.0005)
threading.Thread(target=tick, daemon=True).start()
threading.Timer(600, lambda: __import__("os")._exit(0)).start()
print("ready", flush=True)
for _ in sys.stdin:
    print(f"{{gap * 1000:.2f}}", flush=True)
    gap = 0.0
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--torch", action="store_true")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        sys.exit("py-spy not found")
    target = subprocess.Popen([sys.executable, "-c", TARGET.format(torch=args.torch)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None and target.stdin is not None
        target.stdout.readline()
        time.sleep(1.0)

        def gap_ms() -> float:
            target.stdin.write("?\n")
            target.stdin.flush()
            return float(target.stdout.readline())

        gap_ms()
        modes = {"idle (no dump)": None, "--nonblocking": ["--nonblocking"], "--native": ["--native"]}
        print(f"target pid {target.pid}, torch loaded: {args.torch}, {os.cpu_count()} CPUs, {args.repeat} runs each")
        for name, flags in modes.items():
            gaps, walls = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                if flags is None:
                    time.sleep(0.2)
                else:
                    subprocess.run([pyspy, "dump", "--pid", str(target.pid), *flags], capture_output=True, timeout=60,
                                   check=True)
                walls.append(time.perf_counter() - t0)
                gaps.append(gap_ms())
            print(f"{name:16} longest stall: median {statistics.median(gaps):6.1f} ms, max {max(gaps):6.1f} ms;"
                  f" dump wall time median {statistics.median(walls) * 1000:6.0f} ms")
    finally:
        target.kill()
        target.wait(timeout=30)


if __name__ == "__main__":
    main()
