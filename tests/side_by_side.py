"""Run Python snippets in fresh interpreters, all at once.

Import-boundary and missing-extra checks need a new interpreter each, and
importing torch and transformers costs ~10 s of one core: started together,
the snippets use every core instead of waiting for each other.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_side_by_side(
    scripts: Mapping[str, str], cwd: Path, timeout: float = 300
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each script's finished process (exit code, stdout, stderr), by the script's key."""
    started = {
        key: (
            code,
            subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for key, code in scripts.items()
    }
    done = {}
    for key, (code, process) in started.items():
        out, err = process.communicate(timeout=timeout)
        done[key] = subprocess.CompletedProcess(
            [sys.executable, "-c", code], process.returncode, out, err
        )
    return done
