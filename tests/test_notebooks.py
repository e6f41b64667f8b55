"""Every notebook runs top to bottom in quick mode; the package and the notebooks agree.

The notebooks run in solutions mode (`MINIAI_SOLUTIONS=1`): each lesson's "Your turn" check, given the stub, checks
miniai's own version instead and raises if that fails, so a check that stopped accepting miniai's version fails here."""
import os, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))

RUN_NB = """
import sys
from nbdev.test import test_nb
ok, secs = test_nb(sys.argv[1], skip_flags=['notest'], showerr=True)
print(f'{sys.argv[1]}: {"ok" if ok else "FAILED"} in {secs:.1f}s')
sys.exit(0 if ok else 1)
"""


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook_runs_in_quick_mode(nb):
    env = {**os.environ, 'MINIAI_QUICK': '1', 'MPLBACKEND': 'Agg', 'MINIAI_SOLUTIONS': '1'}
    res = subprocess.run([sys.executable, '-c', RUN_NB, str(nb)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, f"{nb.name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"


def _generated_modules():
    return sorted(p for p in (ROOT / 'miniai').glob('*.py') if p.name not in ('__init__.py', '_modidx.py'))


def test_every_module_names_an_existing_notebook():
    for mod in _generated_modules():
        m = re.search(r'File to edit: \.\./(nbs/\S+\.ipynb)', mod.read_text())
        assert m, f"{mod.name} has no 'File to edit' line: was it written by hand?"
        assert (ROOT / m.group(1)).is_file(), f"{mod.name} says to edit {m.group(1)}, which does not exist"


def _copy_project(tmp_path):
    for name in ('nbs', 'miniai'):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
    return tmp_path


def test_nbdev_export_leaves_no_diff(tmp_path):
    proj = _copy_project(tmp_path)
    for mod in (proj / 'miniai').glob('*.py'):
        if mod.name != '__init__.py': mod.unlink()
    subprocess.run([sys.executable, '-c', 'from nbdev.doclinks import nbdev_export; nbdev_export()'], cwd=proj,
                   check=True, capture_output=True)
    made = {p.name: p.read_text() for p in (proj / 'miniai').glob('*.py')}
    have = {p.name: p.read_text() for p in (ROOT / 'miniai').glob('*.py')}
    assert sorted(made) == sorted(have), "modules differ: run nbdev-export and commit"
    stale = [n for n in made if made[n] != have[n]]
    assert not stale, f"{stale} differ from their notebooks: run nbdev-export and commit"


def test_nbdev_clean_leaves_no_diff(tmp_path):
    proj = _copy_project(tmp_path)
    subprocess.run([sys.executable, '-c', 'from nbdev.clean import nbdev_clean; nbdev_clean()'], cwd=proj, check=True,
                   capture_output=True)
    dirty = [p.name for p in NBS if (proj / 'nbs' / p.name).read_text() != p.read_text()]
    assert not dirty, f"{dirty} are not clean: run nbdev-clean and commit"
