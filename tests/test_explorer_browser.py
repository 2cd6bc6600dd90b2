"""The heatmap explorer in a real browser: JupyterLab on localhost, driven headless through Playwright.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`); Playwright's own browser
download is never used. Skips when Chromium or Playwright is absent, unless FOCUSCLIP_REQUIRE_BROWSER=1.
"""
import base64, io, json, os, secrets, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np
import pytest
from conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _require_browser():
    required = os.environ.get("FOCUSCLIP_REQUIRE_BROWSER") == "1"
    try: import playwright.sync_api  # noqa: F401
    except ImportError:
        if required: pytest.fail("FOCUSCLIP_REQUIRE_BROWSER=1 but playwright is not installed")
        pytest.skip("playwright is not installed")
    if not CHROMIUM.exists():
        if required: pytest.fail(f"FOCUSCLIP_REQUIRE_BROWSER=1 but {CHROMIUM} is absent (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _write_inputs(nbdir: Path):
    "A tiny record set (two images, three people) and a notebook that builds the explorer on it."
    from PIL import Image
    from focusclip.data import Record, Person, write_jsonl
    from focusclip.heatmaps import random_people
    rng = np.random.default_rng(0)
    (nbdir / "images").mkdir()
    recs = []
    for i, n in enumerate([2, 1]):
        j, v, s = random_people(rng, n, 160, 120, p_missing=0.0)
        Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8)).save(nbdir / f"images/{i}.png")
        recs.append(Record(id=f"frame{i}", image=f"images/{i}.png", width=160, height=120,
                           people=[Person(j[p].tolist(), v[p].tolist(), scale=float(s[p])) for p in range(n)]))
    write_jsonl(recs, nbdir / "records.jsonl")
    code = ("from focusclip.data import read_jsonl\n"
            "from focusclip.explorer import explore\n"
            "w = explore(read_jsonl('records.jsonl'), '.', size=160)\n"
            "w")
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": code}],
          "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (nbdir / "explorer.ipynb").write_text(json.dumps(nb))


def _env(tmp: Path) -> dict:
    "Every cache and config folder inside the test's temporary folder; the repository importable."
    env = dict(os.environ)
    for var, sub in {"HOME": "home", "JUPYTER_CONFIG_DIR": "jupyter/config", "JUPYTER_DATA_DIR": "jupyter/data",
                     "JUPYTER_RUNTIME_DIR": "jupyter/runtime", "JUPYTERLAB_SETTINGS_DIR": "jupyter/lab-settings",
                     "JUPYTERLAB_WORKSPACES_DIR": "jupyter/lab-workspaces", "IPYTHONDIR": "ipython",
                     "MPLCONFIGDIR": "mpl", "XDG_CACHE_HOME": "xdg/cache", "XDG_CONFIG_HOME": "xdg/config",
                     "XDG_DATA_HOME": "xdg/data"}.items():
        (tmp / sub).mkdir(parents=True, exist_ok=True); env[var] = str(tmp / sub)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"; env["HF_HUB_OFFLINE"] = "1"
    return env


def _wait_for_server(url: str, proc, log: Path, timeout: float = 60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} in {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_for_idle_kernel(base: str, token: str, timeout: float = 60):
    "Until the notebook's session has a started kernel that is idle (running cells earlier asks for a kernel)."
    t0 = time.time()
    while time.time() - t0 < timeout:
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as r:
            sessions = json.loads(r.read())
        if any(s.get("kernel", {}).get("execution_state") == "idle" for s in sessions): return
        time.sleep(0.5)
    raise TimeoutError(f"no idle kernel after {timeout} s: {sessions}")


_READ_IMG = """async (sel) => {
  const img = document.querySelector(sel);
  if (!img || !img.src) return null;
  const buf = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let s = ''; for (let i = 0; i < buf.length; i++) s += String.fromCharCode(buf[i]);
  return {src: img.src, png: btoa(s)};
}"""


def _pixels(png_b64: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_explorer_slider_changes_rendered_image(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright
    nbdir = tmp_path / "notebooks"; nbdir.mkdir()
    _write_inputs(nbdir)
    env = _env(tmp_path / "cfg")
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    with log.open("w") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                                 f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nbdir}",
                                 "--ServerApp.open_browser=False", "--LabApp.news_url=None",
                                 "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                                 "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False", "--allow-root"],
                                cwd=nbdir, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", proc, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}")
                page.wait_for_selector(".jp-Notebook .jp-Cell")
                _wait_for_idle_kernel(base, token)
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_text("Run All Cells", exact=True).click()
                dialog = page.locator(".jp-Dialog button:has-text('Select')")  # a kernel chooser, if the session was not ready
                try: dialog.click(timeout=2_000)
                except Exception: pass
                sel = "img.focusclip-heatmap"
                page.wait_for_function("(sel) => { const i = document.querySelector(sel); return i && i.src; }", arg=sel)
                before = page.evaluate(_READ_IMG, sel)
                readout = page.locator(".focusclip-sigma .widget-readout")
                assert readout.inner_text().strip() == "1.00"
                handle = page.locator(".focusclip-sigma .noUi-handle")
                handle.focus()
                for _ in range(6): handle.press("ArrowRight")  # sigma scale 1.00 -> 1.30, five steps of 0.05 and one more
                page.wait_for_function("([sel, src]) => document.querySelector(sel).src !== src", arg=[sel, before["src"]])
                page.wait_for_timeout(500)  # let the last keypress's update arrive
                after = page.evaluate(_READ_IMG, sel)
                assert readout.inner_text().strip() != "1.00"
                a, b = _pixels(before["png"]), _pixels(after["png"])
                assert a.shape == b.shape == (120, 160, 3)
                assert np.abs(a - b).max() > 10, "moving the sigma slider did not change the rendered heatmap"
                # a wider Gaussian: more of the frame is lit
                assert (b.sum(-1) > 60).sum() > (a.sum(-1) > 60).sum()
                # alpha changes the highlighted view only
                hi_before = page.evaluate(_READ_IMG, "img.focusclip-highlight")
                al = page.locator(".focusclip-alpha .noUi-handle"); al.focus(); al.press("Home")  # alpha 0.5 -> 0
                page.wait_for_function("([sel, src]) => document.querySelector(sel).src !== src",
                                       arg=["img.focusclip-highlight", hi_before["src"]])
                page.wait_for_timeout(300)
                hi_after = page.evaluate(_READ_IMG, "img.focusclip-highlight")
                assert np.abs(_pixels(hi_before["png"]) - _pixels(hi_after["png"])).max() > 10
                assert page.evaluate(_READ_IMG, sel)["src"] == after["src"]  # the heatmap did not change
            finally:
                browser.close()
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
