"""The HTML report in a real headless Chromium: the page renders offline, its script runs, and the culprit of
seed 001 (global rank 6) is marked in the rendered DOM and visible in a screenshot."""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from hangdoc.analysis.pipeline import diagnose
from hangdoc.importers import load_inputs
from hangdoc.report.html import render

pytestmark = pytest.mark.integration

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((b for b in (shutil.which(n) for n in BROWSERS) if b), None)
TIMEOUT_S = 120


def chromium(page: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on a local file with networking off; its whole process group dies on timeout."""
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args, page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    return out


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit non-interlaced RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and not interlace
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels, i = bytearray(stride), [], 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels += [tuple(line[x : x + 3]) for x in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


@pytest.mark.skipif(BROWSER is None, reason="no chromium binary on PATH (Debian/Ubuntu: apt-get install chromium)")
def test_seed001_report_renders_in_chromium_with_the_culprit_marked(tmp_path: Path) -> None:
    page = tmp_path / "hang-report.html"
    page.write_text(render(diagnose(load_inputs([SEED001]))), encoding="utf-8")

    dom = chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert 'data-rendered="2"' in dom  # the page's script ran and found the culprit's row in both pictures
    assert dom.count('data-culprit="6"') >= 3 and 'data-diverging="1"' in dom
    assert "rank 6 (DP 1, TP rank 2)</span>" in dom
    assert "collective_mismatch" in dom and "all_gatherv [14, 256]" in dom

    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "profile-shot", "--hide-scrollbars", "--window-size=1300,900", f"--screenshot={shot}")
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1300, 900)
    colours = Counter(pixels)
    assert len(colours) > 50  # text, cells and bars, not a blank or error page
    assert colours[(0xC0, 0x39, 0x2B)] > 200  # the red culprit tag and the culprit's cell outline
    assert colours[(0xFD, 0xE2, 0xDF)] > 5000  # the culprit's highlighted rows
    assert colours[(0x59, 0xA1, 0x4F)] > 300  # rank 6's all_gatherv: the only all_gather cell
