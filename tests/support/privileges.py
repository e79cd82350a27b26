"""Running spikewatch as another user (uid 65534) from this checkout."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys

AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@functools.cache
def why_nobody_cannot_run() -> str | None:
    """Why uid 65534 cannot import spikewatch from this checkout and venv, or None.

    A checkout under a 0700 directory (a mktemp folder, a home) is fine for root but
    closed to every other user: tests that drop to nobody would then fail on the
    import, not on what they check. Tried for real, since mode bits alone mislead
    (overlay file systems, ACLs)."""
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux) to drop to uid 65534"
    res = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import spikewatch.sampler.daemon"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    if res.returncode != 0:
        return (
            f"uid 65534 cannot import spikewatch from this checkout ({res.stderr.strip()[-200:]}): "
            "clone to a world-readable place to run this test"
        )
    return None
