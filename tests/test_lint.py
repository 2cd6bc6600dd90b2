"""The package passes pyflakes' rules (ruff's `F`: unused imports and variables, undefined names, f-strings without fields)."""
import subprocess, sys
from conftest import ROOT


def test_ruff_finds_nothing_in_the_package():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", "--output-format", "concise", "focusclip/"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"ruff check --select F focusclip/ (fix the notebooks, then nbdev-export):\n{r.stdout}{r.stderr}"
