"""The DVC pipeline's declarations: every stage depends on the modules it imports and on the keys it reads, and no more.

The status tests run on a copy of the pipeline whose outputs are placeholders recorded with `dvc commit` (what a
reproduced pipeline looks like to `dvc status`, in seconds instead of minutes), then change one parameter each."""
import ast, json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
import nbformat
import yaml
from conftest import ROOT
from focusclip.config import read_config
from focusclip.recipe import train_config
from focusclip.report import report_params, run_files

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
NOT_IN_PIPELINE = ("focusclip/explorer.py", "focusclip/testing.py", "focusclip/pipeline.py", "focusclip/cli.py")


def _imports(src: str, package: str = "focusclip") -> set:
    "focusclip modules imported anywhere in `src` (top level or inside functions)."
    out = set()
    for n in ast.walk(ast.parse(src)):
        if isinstance(n, ast.ImportFrom):
            if n.level and n.module: out.add(f"{package}.{n.module}")
            elif n.module and n.module.startswith("focusclip"):
                out.add(n.module)
                if n.module == "focusclip": out |= {f"focusclip.{a.name}" for a in n.names}
        elif isinstance(n, ast.Import): out |= {a.name for a in n.names if a.name.startswith("focusclip.")}
    return out - {"focusclip"}


def module_closure(notebook: Path) -> set:
    "The files of every focusclip module a stage notebook imports, directly or through other modules."
    cells = json.loads(notebook.read_text())["cells"]
    todo, seen = list(_imports("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))), set()
    while todo:
        m = todo.pop()
        if m in seen: continue
        seen.add(m)
        path = ROOT / (m.replace(".", "/") + ".py")
        assert path.exists(), f"{notebook.name} imports {m}, which has no file"
        todo += _imports(path.read_text())
    return {m.replace(".", "/") + ".py" for m in seen}


STUDY = ROOT / "studies/focus"
ALL_STAGES = [(ROOT, n, st) for n, st in STAGES.items()] + \
             [(STUDY, n, st.get("do", st)) for n, st in yaml.safe_load((STUDY / "dvc.yaml").read_text())["stages"].items()]


@pytest.mark.parametrize("where, name, st", ALL_STAGES, ids=[f"{w.name}:{n}" for w, n, _ in ALL_STAGES])
def test_stage_depends_on_exactly_the_modules_it_imports(where, name, st):
    "The main pipeline's stages and the focus study's: the focusclip modules each declares are exactly those its notebook imports."
    rel = lambda d: str((where / d).resolve().relative_to(ROOT))
    nb = next(d for d in st["deps"] if d.endswith(".ipynb"))
    assert nb in st["cmd"], f"{name}: runs a notebook it does not depend on"
    declared = {rel(d) for d in st["deps"] if rel(d).startswith("focusclip/") and d.endswith(".py")}
    imported = module_closure(where / nb)
    assert imported - declared == set(), f"{name} imports modules it does not depend on: {sorted(imported - declared)}"
    assert declared - imported == set(), f"{name} depends on modules it never imports: {sorted(declared - imported)}"
    assert not set(NOT_IN_PIPELINE) & declared


def test_training_curves_declared_as_plots_for_every_run():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    runs = {f"results/train/seed_{s}/{v}" for s in params["seeds"] for v in params["variants"]}
    for plot in DVC_YAML["plots"]:
        (pid, props), = plot.items()
        assert props["x"] == "step"
        assert {str(Path(f).parents[3]) for f in props["y"]} == runs, pid
        for f, col in props["y"].items(): assert Path(f).stem == col


PAPERMILL = "papermill -k python3 --engine focusclip"  # the package's engine: the kernel on Unix sockets (focusclip/engine.py)


@pytest.mark.parametrize("where, name, st", ALL_STAGES, ids=[f"{w.name}:{n}" for w, n, _ in ALL_STAGES])
def test_every_stage_runs_papermill_with_the_package_engine(where, name, st):
    assert PAPERMILL in " ".join(st["cmd"].split()), f"{name}: {st['cmd']}"


def test_a_stage_kernel_starts_without_the_plain_tcp_warning(tmp_path):
    "The stages' papermill command on a one-cell notebook: the kernel reports IPC transport, and nothing warns of plain-text TCP."
    cell = nbformat.v4.new_code_cell("from ipykernel.kernelapp import IPKernelApp\nprint(IPKernelApp.instance().transport)")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "one.ipynb")
    r = subprocess.run([sys.executable, "-m", *PAPERMILL.split(), "--log-level", "WARNING", "one.ipynb", "out.ipynb"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "without encryption" not in r.stderr + r.stdout, r.stderr
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs[0]["text"].strip() == "ipc"


def out_path(cmd: str, item: dict) -> str:
    "The `-p out_path` a stage command hands its notebook, with `${item.*}` filled in."
    p = re.search(r"-p out_path (\S+)", cmd)[1]
    for k, v in item.items(): p = p.replace(f"${{item.{k}}}", str(v))
    return p


def test_report_reads_exactly_the_files_the_evaluate_stages_write():
    "The evaluate stages' `out_path` for the params' variants x seeds (and the pretrained towers) are `run_files`' names, as the report stage builds them."
    cfg = read_config(ROOT / "params.yaml", report=report_params, train=train_config)
    variants, seeds = cfg["train"]["variants"], cfg["train"]["seeds"]
    written = [out_path(STAGES["evaluate"]["cmd"], dict(variant=v, seed=s)) for v in variants for s in seeds]
    written.append(out_path(STAGES["evaluate_pretrained"]["cmd"], {}))
    assert written == [str(f) for f in run_files(cfg["report"]["results_dir"], variants, seeds)]

# ---- dvc status on a committed copy ----------------------------------------------------------------

def dvc(cwd: Path, *args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    if check: assert r.returncode == 0, f"dvc {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return r


def _placeholder(path: Path):
    "A file (its name has a suffix) or a folder with one file, standing for a stage's output."
    if path.exists(): return
    if path.suffix: path.parent.mkdir(parents=True, exist_ok=True); path.write_text(f"{path.name}\n")
    else: path.mkdir(parents=True, exist_ok=True); (path / "placeholder.txt").write_text(f"{path.name}\n")


def _outs(st: dict, item: dict) -> list:
    paths = []
    for key in ("outs", "metrics", "plots"):
        for o in st.get(key, []):
            p = o if isinstance(o, str) else next(iter(o))
            for k, v in item.items(): p = p.replace(f"${{item.{k}}}", str(v))
            paths.append(p)
    return paths


@pytest.fixture()
def committed(tmp_path) -> Path:
    "A copy of the pipeline (code, notebooks, params) with placeholder outputs, all recorded in dvc.lock."
    work = tmp_path / "repo"; work.mkdir()
    for f in ("dvc.yaml", "params.yaml"): shutil.copy(ROOT / f, work / f)
    shutil.copytree(ROOT / "stages", work / "stages")
    shutil.copytree(ROOT / "focusclip", work / "focusclip", ignore=shutil.ignore_patterns("__pycache__"))
    dvc(work, "init", "--no-scm", "-q")
    train = yaml.safe_load((work / "params.yaml").read_text())["train"]
    for name, st in STAGES.items():
        items = [dict(variant=v, seed=s) for v in train["variants"] for s in train["seeds"]] if "matrix" in st else [{}]
        for item in items:
            for p in _outs(st, item): _placeholder(work / p)
    dvc(work, "commit", "-f", "-q")
    return work


def stale(work: Path) -> set:
    "The stages `dvc status` reports as changed."
    out = json.loads(dvc(work, "status", "--json").stdout or "{}")
    return {k.split(":")[-1] for k in out}


def edit_params(work: Path, fn):
    p = yaml.safe_load((work / "params.yaml").read_text()); fn(p)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def test_committed_copy_is_up_to_date(committed):
    assert stale(committed) == set()


def test_adding_a_seed_stales_only_that_seeds_stages(committed):
    "The new seed's runs, and the report, which reads exactly the runs the params declare."
    edit_params(committed, lambda p: p["train"]["seeds"].append(45))
    assert stale(committed) == {"train@clip-45", "train@focusclip-45", "evaluate@clip-45", "evaluate@focusclip-45", "report"}


def test_heatmap_alpha_stales_only_the_figure(committed):
    edit_params(committed, lambda p: p["heatmaps"].update(alpha=0.3))
    assert stale(committed) == {"heatmap_figure"}


def test_base_seed_stales_nothing_the_matrix_seeds(committed):
    edit_params(committed, lambda p: p["base"].update(seed=7))
    assert stale(committed) == {"evaluate_pretrained"}  # the untrained towers' projection heads; every trained run has its own seed


def test_code_no_stage_runs_reruns_nothing(committed):
    with open(committed / "focusclip/explorer.py", "a") as f: f.write("\n# an edit\n")
    with open(committed / "focusclip/testing.py", "a") as f: f.write("\n# an edit\n")
    assert stale(committed) == set()
    with open(committed / "focusclip/describe.py", "a") as f: f.write("\n# an edit\n")
    assert stale(committed) == {"describe"}  # training reads descriptions.jsonl, not the describers


def test_push_to_and_pull_from_a_local_remote(committed, tmp_path):
    store = tmp_path / "store"
    dvc(committed, "remote", "add", "-d", "local", str(store))
    dvc(committed, "push", "-q")
    assert any(store.rglob("*")), "nothing pushed"
    for d in ("data/records", "data/heatmaps", "data/features", "models"): shutil.rmtree(committed / d)  # the cached outputs
    (committed / "data/descriptions/descriptions.jsonl").unlink(); shutil.rmtree(committed / ".dvc" / "cache")
    dvc(committed, "pull", "-q")
    assert (committed / "data/records/placeholder.txt").read_text() == "records\n"
    assert (committed / "data/descriptions/descriptions.jsonl").read_text() == "descriptions.jsonl\n"
    assert stale(committed) == set()
