"""Type-check the installed layout (`make lint`).

The import names (``spikewatch.sampler``…) are mapped onto the top-level folders by
setuptools' package-dir, which mypy cannot follow through an editable install's
import hook. So mypy runs over a tree of symbolic links shaped like the installed
package: the same files, the names users import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"sampler": "sampler", "driver": "driver", "analysis": "analysis"}


def link_tree(dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    pkg = dest / "spikewatch"
    pkg.mkdir(parents=True)
    for entry in (ROOT / "spikewatch").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (pkg / name).symlink_to(ROOT / folder, target_is_directory=True)
    return dest


def main() -> int:
    tree = link_tree(ROOT / "build" / "typecheck")
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / "build" / "mypy-cache"),
        "-p",
        "spikewatch",
        *sys.argv[1:],
    ]
    return subprocess.call(cmd, cwd=tree, env={**os.environ, "MYPYPATH": str(tree)})


if __name__ == "__main__":
    sys.exit(main())
