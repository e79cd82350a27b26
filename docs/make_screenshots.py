"""Regenerate docs/console.png and docs/report.png from a real `spikewatch demo`.

    .venv/bin/python docs/make_screenshots.py [--at 50]

Needs rsvg-convert (apt-get install librsvg2-bin) and chromium (apt-get install chromium).
Runs the demo without a terminal, attaches the real console app headless to the
demo's sampler, saves its screen `--at` seconds into the run (during the bursts),
then screenshots the demo's report.html with headless chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent


async def console_svg(endpoint: str, inlet: str, seconds: float, svg: Path) -> None:
    from spikewatch.analysis.console import ConsoleApp, ConsoleOptions

    app = ConsoleApp([endpoint], ConsoleOptions(inlet=[inlet], window_s=60, title="spikewatch demo"))
    async with app.run_test(size=(150, 44)) as pilot:
        await pilot.pause(seconds)
        app.save_screenshot(filename=svg.name, path=str(svg.parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--at", type=float, default=50.0, help="seconds into the demo for the console shot")
    args = ap.parse_args()
    for tool in ("rsvg-convert", "chromium"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install librsvg2-bin chromium")
    work = Path(tempfile.mkdtemp(prefix="spikewatch-shots-"))
    out = work / "demo"
    demo = subprocess.Popen([sys.executable, "-m", "spikewatch", "demo", "--no-console", "--out", str(out)],
                            stdout=subprocess.PIPE, text=True)
    assert demo.stdout is not None
    endpoint = inlet = None
    t0 = time.monotonic()
    for line in demo.stdout:
        m = re.search(r"publishing on ([^\s,]+), inlet ([^\s,]+)", line)
        if m:
            endpoint, inlet = m.group(1), m.group(2)
            break
    if endpoint is None:
        sys.exit("the demo did not say where it publishes")
    svg = work / "console.svg"
    asyncio.run(console_svg(endpoint, inlet, args.at - (time.monotonic() - t0), svg))
    # rsvg drops the leading spaces of each text run ("phase x   load" became
    # "phase xload"): make them non-breaking, which every renderer keeps.
    svg.write_text(re.sub(r"(<text[^>]*>)([^<]*)(</text>)",
                          lambda m: m.group(1) + m.group(2).replace(" ", "&#160;") + m.group(3),
                          svg.read_text()))
    subprocess.run(["rsvg-convert", "-o", str(DOCS / "console.png"), str(svg)], check=True)
    rest = demo.communicate()[0]
    print(rest[-1500:])
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={DOCS / 'report.png'}", "--window-size=1400,2200", "--virtual-time-budget=5000",
                    (out / "report.html").resolve().as_uri()], check=True, capture_output=True)
    print(f"wrote {DOCS / 'console.png'} and {DOCS / 'report.png'} (demo output in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
