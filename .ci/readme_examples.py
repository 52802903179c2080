"""Run the README's Python examples as a new user would: from outside the repository.

Usage: python .ci/readme_examples.py README.md "Section title" [...]

Each ```python block under the named ``##`` sections runs in a fresh
interpreter, in an empty temporary folder, so ``rain_search`` is imported from
the installed distribution and never from this checkout. A fresh
``RAIN_CACHE_DIR`` makes the embedded model's first-use conversion part of the
check. Prints each block's duration and exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def blocks(readme: str, section: str) -> list[str]:
    """The python code blocks of the ``## section`` part of ``readme``."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    if match is None:
        raise SystemExit(f"README has no section {section!r}")
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)


def main(readme_path: str, *sections: str) -> int:
    readme = Path(readme_path).read_text()
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "RAIN_CACHE_DIR": str(Path(work) / "cache")}
        check = "import rain_search, sys; print(rain_search.__version__, rain_search.__file__)"
        where = subprocess.run(
            [sys.executable, "-c", check], cwd=work, env=env, capture_output=True, text=True
        )
        print(f"rain_search {where.stdout.strip()}", flush=True)
        checkout = Path(readme_path).resolve().parent / "rain_search"
        if where.returncode or checkout in Path(where.stdout.split()[-1]).resolve().parents:
            raise SystemExit(f"rain_search is not importable from the install: {where.stderr}")
        for section in sections:
            for index, code in enumerate(blocks(readme, section), 1):
                script = Path(work) / f"example_{index}.py"
                script.write_text(code)
                start = time.perf_counter()
                done = subprocess.run([sys.executable, str(script)], cwd=work, env=env)
                took = time.perf_counter() - start
                print(f"--- {section} #{index}: exit {done.returncode} in {took:.0f} s", flush=True)
                if done.returncode:
                    return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
