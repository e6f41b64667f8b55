"""Build the documentation site offline: the lessons (nbs/*.ipynb with their stored outputs, in file-name order)
and an API page per module, rendered by mkdocs-material + mkdocs-jupyter.

Everything is built in a temporary folder beside the output; the output folder (`_docs/`) is replaced only when
the whole build succeeded, so a failure never leaves a half-built site. A notebook with a stored error output
(or, with --execute, a cell that fails when run), a notebook without a `# Title` cell, a link to a missing
notebook/page/anchor, or any mkdocs warning (strict mode) stops the build with one error naming the notebook
and cell. Usage: `python tools/build_docs.py [--nbs nbs] [--out _docs] [--execute]`.
"""
from __future__ import annotations

import argparse, copy, html.parser, json, logging, os, posixpath, re, shutil, sys, tempfile, time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "docs_assets"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_pages  # noqa: E402


class DocsBuildError(Exception):
    "The docs could not be built; the message names the notebook and cell (or page) at fault."


def _cell_name(path: Path, i: int, cell) -> str:
    cid = cell.get("id")
    return f"{path.name}, cell {i}" + (f" (id {cid})" if cid else "")


# ---------------------------------------------------------------- notebooks
def notebook_paths(nbs: Path) -> list[Path]:
    paths = sorted(p for p in Path(nbs).glob("*.ipynb") if not p.name.startswith(("_", ".")))
    if not paths: raise DocsBuildError(f"no notebooks (*.ipynb) found in {nbs}")
    return paths


def title_and_summary(nb: dict, path: Path) -> tuple[str, str]:
    "nbdev style: the first cell is markdown `# Title`, optionally followed by a `> summary` line."
    cells = nb.get("cells", [])
    src = "".join(cells[0]["source"]) if cells and cells[0]["cell_type"] == "markdown" else ""
    m = re.match(r"\s*#\s+(.+)", src)
    if not m:
        raise DocsBuildError(f"{path.name}, cell 0: a lesson must start with a markdown cell `# Title` "
                             f"(got {src[:60]!r})")
    s = re.search(r"^>\s*(.+)$", src, re.M)
    return m.group(1).strip(), (s.group(1).strip() if s else "")


def check_stored_errors(nb: dict, path: Path) -> None:
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                raise DocsBuildError(f"{_cell_name(path, i, cell)} failed when the notebook was run (stored error "
                                     f"output {out.get('ename')}: {out.get('evalue')}); fix it and re-run the notebook")


def execute_notebook(nb: dict, path: Path, timeout: int = 1200) -> dict:
    "Run every cell of a copy of `nb` in a fresh kernel (cwd = the notebook's folder); name the first cell that fails."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nbn = nbformat.from_dict(copy.deepcopy(nb))
    client = NotebookClient(nbn, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for i, cell in enumerate(nbn.cells):
            try: client.execute_cell(cell, i)
            except CellExecutionError as e:
                raise DocsBuildError(f"{_cell_name(path, i, cell)} failed when executed: {e.ename}: {e.evalue}") from None
    return json.loads(nbformat.writes(nbn))


_DIRECTIVE = re.compile(r"^\s*#\s?\|")
_MD_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_FENCE = re.compile(r"(^```.*?^```[^\n]*$)", re.M | re.S)
_TICKED = re.compile(r"(?<![\[`])`([A-Za-z_]\w*)`(?![`\]])")


def preprocess(nb: dict, path: Path, names: set[str], symbols: dict, module_page: str | None) -> tuple[dict, dict]:
    """A copy of `nb` for the site: nbdev directive lines (`#| export`, ...) removed, cells left empty by that
    dropped, `X.ipynb` links pointed at the lesson's page, and `name` in backticks linked to its API entry.
    Returns the copy and {href: cell description} for every link written in markdown."""
    nb = copy.deepcopy(nb)
    cells, links = [], {}
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"])
        if cell["cell_type"] == "code":
            src = "\n".join(l for l in src.split("\n") if not _DIRECTIVE.match(l)).strip("\n")
            if not src.strip() and not cell.get("outputs"): continue
        elif cell["cell_type"] == "markdown":
            def fix_link(m, where=_cell_name(path, i, cell)):
                href = m.group(2)
                parts = urlsplit(href)
                if parts.scheme or parts.netloc or not parts.path.endswith(".ipynb"):
                    links[href] = where
                    return m.group(0)
                target = posixpath.basename(parts.path)
                if target not in names:
                    raise DocsBuildError(f"{where}: link to {href!r}, but there is no notebook {target} in the lessons")
                new = f"../{target[:-len('.ipynb')]}/" + (f"#{parts.fragment}" if parts.fragment else "")
                links[new] = where
                return m.group(1) + new + m.group(3)

            def autolink(m):
                pages = symbols.get(m.group(1), [])
                if len(pages) > 1: pages = [p for p in pages if p[0] == module_page]
                if len(pages) != 1: return m.group(0)
                return f"[`{m.group(1)}`](../api/{pages[0][0]}/#{pages[0][1]})"

            pieces = _FENCE.split(src)
            def rewrite(text):  # links everywhere; API links only outside headings
                text = _MD_LINK.sub(fix_link, text)
                return "\n".join(l if l.lstrip().startswith("#") else _TICKED.sub(autolink, l) for l in text.split("\n"))

            src = "".join(p if k % 2 else rewrite(p) for k, p in enumerate(pieces))
        cell["source"] = src
        cells.append(cell)
    nb["cells"] = cells
    return nb, links


# ---------------------------------------------------------------- site check
class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.refs = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("id", "name"):
            if a.get(k) and (k == "id" or tag == "a"): self.ids.add(a[k])
        for k in ("href", "src"):
            if a.get(k) and tag in ("a", "img", "script", "link", "iframe", "source"): self.refs.append(a[k])


def check_site(site: Path) -> list[tuple[str, str, str]]:
    "Every internal href/src of every page resolves to a file (and its #anchor to an id). Returns (page, ref, why)."
    parsed = {}
    for f in site.rglob("*.html"):
        p = _Refs(); p.feed(f.read_text(encoding="utf-8")); parsed[f.relative_to(site).as_posix()] = p
    bad = []
    for page, p in sorted(parsed.items()):
        if page == "404.html": continue  # mkdocs writes it with root-relative links for any depth
        for ref in p.refs:
            u = urlsplit(ref)
            if u.scheme or u.netloc or ref.startswith(("#__", "data:")) or ref == "#": continue
            target = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(u.path))) if u.path else page
            if u.path.endswith("/") or (u.path and (site / target).is_dir()): target = posixpath.join(target, "index.html")
            if target.startswith("../") or not (site / target).is_file():
                bad.append((page, ref, "no such file")); continue
            if u.fragment and target.endswith(".html") and unquote(u.fragment) not in parsed[target].ids:
                bad.append((page, ref, f"no anchor #{u.fragment} in {target}"))
    return bad


# ---------------------------------------------------------------- build
def build(nbs: Path = ROOT / "nbs", out: Path = ROOT / "_docs", config: Path = ROOT / "mkdocs.yml",
          execute: bool = False, package: str = "miniai", quiet: bool = False) -> Path:
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort, MkDocsException
    t0 = time.time()
    say = (lambda *a: None) if quiet else (lambda *a: print("docs:", *a, flush=True))
    nbs, out = Path(nbs).resolve(), Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    try:
        src, site = tmp / "src", tmp / "site"
        (src / "api").mkdir(parents=True)
        api = api_pages.write_api_pages(src / "api", package)
        symbols = api_pages.symbol_index(package)
        paths = notebook_paths(nbs)
        names = {p.name for p in paths}
        lessons, links_by_page = [], {}
        for path in paths:
            nb = json.loads(path.read_text(encoding="utf-8"))
            title, summary = title_and_summary(nb, path)
            check_stored_errors(nb, path)
            if execute:
                say(f"executing {path.name}")
                nb = execute_notebook(nb, path)
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join("".join(c["source"]) for c in nb["cells"]
                                                                 if c["cell_type"] == "code"), re.M)
            module_page = api_pages.page_name(f"{package}.{m.group(1)}") if m else None
            nb, links = preprocess(nb, path, names, symbols, module_page)
            (src / path.name).write_text(json.dumps(nb), encoding="utf-8")
            links_by_page[f"{path.stem}/index.html"] = links
            lessons.append((path.name, title, summary))
        for f in ASSETS.iterdir(): shutil.copy(f, src / f.name)
        (src / "index.md").write_text(index_page(lessons, package), encoding="utf-8")
        nav = [{"Home": "index.md"},
               {"Lessons": [{title.replace("`", ""): name} for name, title, _ in lessons]},
               {"API reference": [{"Overview": "api/index.md"}] +
                                 [{m: f"api/{api_pages.page_name(m)}.md"} for m in api_pages.exported_modules(package)]}]
        say(f"{len(lessons)} lessons, {len(api) - 1} API pages; rendering with mkdocs")
        warnings = _Capture()
        mk_logger = logging.getLogger("mkdocs")
        mk_logger.addHandler(warnings)
        try:
            cfg = load_config(config_file=str(config), docs_dir=str(src), site_dir=str(site), strict=True, nav=nav)
            mkdocs_build(cfg)
        except (Abort, MkDocsException, SystemExit) as e:
            raise DocsBuildError("mkdocs failed (strict mode):\n  " + "\n  ".join(warnings.lines or [str(e)])) from None
        finally:
            mk_logger.removeHandler(warnings)
        bad = check_site(site)
        if bad:
            lines = [f"{page}: {ref} ({why})" + (f" - written in {links_by_page[page][ref]}"
                     if ref in links_by_page.get(page, {}) else "") for page, ref, why in bad]
            raise DocsBuildError(f"{len(bad)} broken link(s) in the site:\n  " + "\n  ".join(lines[:30]))
        if out.exists():
            shutil.move(str(out), str(tmp / "old"))
        shutil.move(str(site), str(out))
        say(f"built {out} in {time.time() - t0:.1f}s")
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record): self.lines.append(record.getMessage())


def index_page(lessons, package: str) -> str:
    import importlib
    doc = (importlib.import_module(package).__doc__ or "").strip().split("\n")[0]
    rows = [f"| [{t}]({n}) | {s.replace('|', chr(92) + '|')} |" for n, t, s in lessons]
    return "\n".join([f"# {package}", "", doc, "",
                      "The lessons are notebooks, shown here with the outputs of their last full run. The "
                      "[API reference](api/index.md) lists every exported name with its signature and docstring.",
                      "", "## Lessons", "", "| lesson | summary |", "| --- | --- |", *rows, ""])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nbs", type=Path, default=ROOT / "nbs", help="folder of the lesson notebooks")
    ap.add_argument("--out", type=Path, default=ROOT / "_docs", help="where the site goes (replaced on success)")
    ap.add_argument("--config", type=Path, default=ROOT / "mkdocs.yml")
    ap.add_argument("--execute", action="store_true", help="run every notebook first; a failing cell fails the build")
    a = ap.parse_args(argv)
    try: build(a.nbs, a.out, a.config, execute=a.execute)
    except DocsBuildError as e:
        print(f"docs build failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
