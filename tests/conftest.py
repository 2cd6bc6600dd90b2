"""Shared test set-up: caches out of $HOME, offline hubs, paths to the repo and the optional shared data."""
import os, tempfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

_CACHE = Path(tempfile.mkdtemp(prefix="focusclip-test-cache-"))
for var, sub in {"MPLCONFIGDIR": "mpl", "XDG_CACHE_HOME": "xdg", "IPYTHONDIR": "ipython",
                 "JUPYTER_CONFIG_DIR": "jupyter/config", "JUPYTER_DATA_DIR": "jupyter/data",
                 "JUPYTER_RUNTIME_DIR": "jupyter/runtime", "HF_HOME": "hf", "TORCH_HOME": "torch",
                 "DVC_SITE_CACHE_DIR": "dvc-site", "DVC_GLOBAL_CONFIG_DIR": "dvc-global", "YOLO_CONFIG_DIR": "ultralytics"}.items():
    os.environ.setdefault(var, str(_CACHE / sub))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="session")
def root() -> Path: return ROOT


@pytest.fixture(scope="session")
def shared() -> Path:
    "The shared real-data samples beside the project; tests using it skip when it is absent."
    if not SHARED.exists(): pytest.skip(f"{SHARED} is absent (a fresh clone has no ../shared)")
    return SHARED


@pytest.fixture
def checked_sections(monkeypatch) -> list:
    "The labels of the params sections checked from now on (each top-level `check_params` call; the nested ones are its own)."
    import focusclip.config as C
    checked, depth, check = [], [0], C.check_params
    def counting(given, defaults, where="params", *a, **k):
        if depth[0] == 0: checked.append(where)
        depth[0] += 1
        try: return check(given, defaults, where, *a, **k)
        finally: depth[0] -= 1
    monkeypatch.setattr(C, "check_params", counting)
    return checked
