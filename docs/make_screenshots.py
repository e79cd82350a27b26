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


def _trim_text_runs(svg: str) -> str:
    """Move the blanks at either end of each text run into its x and width.

    rsvg drops the leading blanks of a run (non-breaking ones too) yet still draws it at
    the run's x, so "phase x" + "   load" rendered as "phase xload". A run without its
    blanks, placed where its first letter belongs, renders the same everywhere.
    """

    def trim(m: re.Match[str]) -> str:
        attrs, body = m.group(1), m.group(2)
        chars = re.findall(r"&#?\w+;|.", body)
        x = re.search(r'\bx="([\d.]+)"', attrs)
        width = re.search(r'textLength="([\d.]+)"', attrs)
        if not chars or x is None or width is None:
            return m.group(0)
        blank = ("&#160;", " ")
        lead = next((i for i, c in enumerate(chars) if c not in blank), len(chars))
        tail = next((i for i, c in enumerate(reversed(chars)) if c not in blank), len(chars))
        if lead == len(chars):
            return ""  # only blanks: the background rects already paint them
        cw = float(width.group(1)) / len(chars)
        kept = chars[lead : len(chars) - tail]
        attrs = attrs.replace(x.group(0), f'x="{float(x.group(1)) + lead * cw:.1f}"')
        attrs = attrs.replace(width.group(0), f'textLength="{len(kept) * cw:.1f}"')
        return f"<text{attrs}>{''.join(kept)}</text>"

    return re.sub(r"<text([^>]*)>([^<]*)</text>", trim, svg)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--at", type=float, default=50.0, help="seconds into the demo for the console shot")
    args = ap.parse_args()
    for tool in ("rsvg-convert", "chromium"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install librsvg2-bin chromium")
    work = Path(tempfile.mkdtemp(prefix="spikewatch-shots-"))
    print(f"working in {work}", flush=True)
    out = work / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "spikewatch", "demo", "--no-console", "--out", str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
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
    svg.write_text(_trim_text_runs(svg.read_text()))
    subprocess.run(["rsvg-convert", "-o", str(DOCS / "console.png"), str(svg)], check=True)
    rest = demo.communicate()[0]
    print(rest[-1500:])
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={DOCS / 'report.png'}",
            "--window-size=1400,2200",
            "--virtual-time-budget=5000",
            (out / "report.html").resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
    )
    print(f"wrote {DOCS / 'console.png'} and {DOCS / 'report.png'} (demo output in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
