"""The docs site (`make docs`, tools/build_docs.py): bad inputs fail the build cleanly, the API pages cover every
exported name, and the real site works in headless Chromium (pages load without console errors, internal links
resolve, plots decode, search finds `Learner`)."""
import importlib, importlib.util, json, os, re, shutil, sys, threading, time, urllib.error, urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

pytest.importorskip("mkdocs", reason="the docs tools are not installed: pip install -e '.[docs]'")
pytest.importorskip("mkdocs_jupyter", reason="mkdocs-jupyter is not installed: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import api_pages, build_docs  # noqa: E402
from build_docs import DocsBuildError  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"


# ------------------------------------------------------------------ tiny notebook sets (fast, no browser)
def _nb(*cells):
    out = []
    for i, c in enumerate(cells):
        kind, src = c[:2]
        cell = {"cell_type": kind, "id": f"c{i}", "metadata": {}, "source": src}
        if kind == "code": cell.update(execution_count=None, outputs=list(c[2]) if len(c) > 2 else [])
        out.append(cell)
    return {"cells": out, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def _good_set():
    return {
        "01_alpha.ipynb": _nb(("markdown", "# Alpha lesson\n\n> The first tiny lesson."),
                              ("code", "#| default_exp alpha"),
                              ("code", "#| export\ndef double(x): return 2 * x",),
                              ("markdown", "## Using it\n\n`greet` says hello; see [the next one](02_beta.ipynb#a-heading)."),
                              ("code", "double(21)", [{"output_type": "execute_result", "execution_count": 1,
                                                        "metadata": {}, "data": {"text/plain": "42"}}])),
        "02_beta.ipynb": _nb(("markdown", "# Beta lesson\n\n> The second one."), ("markdown", "## A heading\n\nText.")),
    }


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    "A notebook folder, an existing output folder with a marker in it, and a tiny importable package."
    pkg = tmp_path / "pkgs" / "tinypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A tiny package for the docs tests."""\n')
    (pkg / "alpha.py").write_text('"""Greetings."""\n__all__ = ["greet", "LIMIT", "Greeter"]\nLIMIT = 3\n'
                                  'def greet(name: str, times: int = 1) -> str:\n    "Say hello to `name`."\n'
                                  '    return "hi " * times + name\n'
                                  'class Greeter:\n    "Greets people."\n    def __init__(self, word="hi"): self.word = word\n'
                                  '    def say(self, name):\n        "Greet `name`."\n        return self.word + name\n')
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    out = tmp_path / "_docs"
    out.mkdir()
    (out / "marker.txt").write_text("the previous site")

    def write(nbset):
        for name, nb in nbset.items(): (nbs / name).write_text(json.dumps(nb))
        return nbs
    def build(**kw): return build_docs.build(nbs, out, package="tinypkg", quiet=True, **kw)
    yield type("Tiny", (), {"nbs": nbs, "out": out, "write": staticmethod(write), "build": staticmethod(build)})
    for m in [m for m in sys.modules if m == "tinypkg" or m.startswith("tinypkg.")]: del sys.modules[m]


def _untouched(t):
    "A failed build leaves the old site as it was and no temporary folder behind."
    assert (t.out / "marker.txt").read_text() == "the previous site"
    assert sorted(p.name for p in t.out.iterdir()) == ["marker.txt"]
    assert [p.name for p in t.out.parent.iterdir() if p.name.startswith("._docs-build-")] == []


def test_tiny_site_builds(tiny):
    tiny.write(_good_set())
    out = tiny.build()
    assert not (out / "marker.txt").exists()  # replaced whole
    page = (out / "01_alpha" / "index.html").read_text()
    assert "Alpha lesson" in page and "The first tiny lesson." in page
    assert "#| export" not in page and "default_exp" not in page and "def double" in page
    assert 'href="../02_beta/#a-heading"' in page  # notebook link pointed at the lesson page
    assert 'href="../api/alpha/#greet"' in page  # `greet` linked to its API entry
    api = (out / "api" / "alpha" / "index.html").read_text()
    for anchor in ("greet", "LIMIT", "Greeter", "Greeter.say"): assert f'id="{anchor}"' in api
    text = re.sub(r"<[^>]+>", "", api)
    assert "Say hello to" in text and "greet(name: str, times: int = 1) -&gt; str" in text
    nav = (out / "index.html").read_text()
    assert nav.index("Alpha lesson") < nav.index("Beta lesson")


def test_stored_error_output_fails_naming_cell(tiny):
    nbs = _good_set()
    nbs["02_beta.ipynb"]["cells"].append(_nb(("code", "1/0", [{"output_type": "error", "ename": "ZeroDivisionError",
                                                               "evalue": "division by zero", "traceback": []}]))["cells"][0])
    nbs["02_beta.ipynb"]["cells"][-1]["id"] = "bad-cell"
    tiny.write(nbs)
    with pytest.raises(DocsBuildError, match=r"02_beta\.ipynb, cell 2 \(id bad-cell\).*ZeroDivisionError"):
        tiny.build()
    _untouched(tiny)


def test_link_to_missing_notebook_fails_naming_cell(tiny):
    nbs = _good_set()
    nbs["02_beta.ipynb"]["cells"][1]["source"] = "## A heading\n\nSee [this](03_gone.ipynb)."
    tiny.write(nbs)
    with pytest.raises(DocsBuildError, match=r"02_beta\.ipynb, cell 1 \(id c1\).*03_gone\.ipynb"):
        tiny.build()
    _untouched(tiny)


def test_broken_anchor_fails_naming_cell(tiny):
    nbs = _good_set()
    nbs["01_alpha.ipynb"]["cells"][3]["source"] = "## Using it\n\nSee [there](02_beta.ipynb#no-such-heading)."
    tiny.write(nbs)
    with pytest.raises(DocsBuildError, match=r"01_alpha/index\.html.*no-such-heading.*01_alpha\.ipynb, cell 3"):
        tiny.build()
    _untouched(tiny)


def test_broken_link_in_api_docstring_fails_strict(tiny):
    tiny.write(_good_set())
    mod = tiny.nbs.parent / "pkgs" / "tinypkg" / "alpha.py"
    mod.write_text(mod.read_text().replace('"Say hello to `name`."', '"Say hello; see [elsewhere](nowhere.md)."'))
    with pytest.raises(DocsBuildError, match=r"(?s)strict.*api/alpha\.md.*nowhere\.md"):
        tiny.build()
    _untouched(tiny)


def test_missing_title_fails(tiny):
    nbs = _good_set()
    nbs["02_beta.ipynb"]["cells"][0]["source"] = "Just text, no title."
    tiny.write(nbs)
    with pytest.raises(DocsBuildError, match=r"02_beta\.ipynb, cell 0.*# Title"):
        tiny.build()
    _untouched(tiny)


def test_execute_mode_names_failing_cell(tiny):
    nbs = _good_set()
    nbs["02_beta.ipynb"]["cells"].append(_nb(("code", "raise ValueError('lesson broke')"))["cells"][0])
    nbs["02_beta.ipynb"]["cells"][-1]["id"] = "raises"
    tiny.write(nbs)
    tiny.build()  # the stored outputs are clean, so without --execute this builds
    (tiny.out / "marker.txt").write_text("the previous site")
    with pytest.raises(DocsBuildError, match=r"02_beta\.ipynb, cell 2 .*failed when executed: ValueError: lesson broke"):
        tiny.build(execute=True)
    assert (tiny.out / "marker.txt").exists() and (tiny.out / "02_beta" / "index.html").exists()


# ------------------------------------------------------------------ the real site
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    t0 = time.time()
    out = build_docs.build(out=tmp_path_factory.mktemp("site") / "_docs", quiet=True)
    print(f"\ndocs: full site built in {time.time() - t0:.1f}s")
    return out


def test_api_pages_cover_every_export(site):
    for modname in api_pages.exported_modules("miniai"):
        mod = importlib.import_module(modname)
        page = (site / "api" / api_pages.page_name(modname) / "index.html").read_text()
        missing = [n for n in mod.__all__ if f'id="{n}"' not in page]
        assert not missing, f"{modname}: exported names without an API entry: {missing}"
    learner = (site / "api" / "learner" / "index.html").read_text()
    assert "Fit <code>model</code>" in learner  # docstrings are rendered as markdown


def _browser_or_skip():
    missing = [what for what, ok in [
        (f"Chromium ({CHROMIUM}; apt-get install chromium)", os.access(CHROMIUM, os.X_OK)),
        (f"chromedriver ({CHROMEDRIVER}; apt-get install chromium-driver)", os.access(CHROMEDRIVER, os.X_OK)),
        ("selenium (pip install -e '.[docs]')", importlib.util.find_spec("selenium") is not None)] if not ok]
    if missing: pytest.skip("browser test needs " + ", ".join(missing))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the browser drops connections it no longer needs
        if not isinstance(sys.exc_info()[1], ConnectionError): super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def served(site):
    srv = _Server(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try: yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown(); srv.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    drv.set_page_load_timeout(60)
    try: yield drv
    finally: drv.quit()


def _lesson_images():
    "lesson page name -> number of image outputs its notebook carries."
    counts = {}
    for p in build_docs.notebook_paths(ROOT / "nbs"):
        nb = json.loads(p.read_text())
        counts[p.stem] = sum(1 for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    return counts


def _status(url, cache={}):
    if url not in cache:
        try:
            with urllib.request.urlopen(url, timeout=10) as r: cache[url] = r.status
        except urllib.error.HTTPError as e: cache[url] = e.code
    return cache[url]


def test_site_in_browser(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    t0 = time.time()
    lessons = _lesson_images()
    todo, seen, problems, pages_with_imgs = [served], set(), [], 0
    while todo:
        url = todo.pop(0)
        if url in seen: continue
        seen.add(url)
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        path = urlsplit(url).path.strip("/")
        if path in lessons:
            # every plot decodes and has a size on the page; none of the notebook's plots is missing
            imgs = browser.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const imgs = Array.from(document.querySelectorAll('article img'));
                Promise.all(imgs.map(i => i.decode().then(() => null, () => i.src.slice(0, 80)))).then(bad =>
                  done({bad: bad.filter(b => b), n: imgs.length, sizes: imgs.map(i => [i.naturalWidth,
                        i.getBoundingClientRect().width, i.getBoundingClientRect().height])}));""")
            if imgs["bad"]: problems.append(f"{path}: images that do not decode: {imgs['bad']}")
            if imgs["n"] < lessons[path]: problems.append(f"{path}: {imgs['n']} <img> for {lessons[path]} plots")
            zero = [s for s in imgs["sizes"] if min(s) <= 0]
            if zero: problems.append(f"{path}: images with no size: {zero}")
            pages_with_imgs += imgs["n"] > 0
        severe = [l["message"] for l in browser.get_log("browser") if l["level"] == "SEVERE"]
        if severe: problems.append(f"{url}: console errors {severe}")
        for href in browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
            target, _ = urldefrag(href)
            if not target.startswith(served): continue
            if _status(target) != 200: problems.append(f"{url}: link {href} -> HTTP {_status(target)}"); continue
            if (target.endswith("/") or target.endswith(".html")) and target not in seen: todo.append(target)
    assert not problems, "\n".join(problems)
    visited = {urlsplit(u).path.strip("/") for u in seen}
    assert set(lessons) <= visited, f"lessons not reachable from the home page: {set(lessons) - visited}"
    assert {f"api/{api_pages.page_name(m)}" for m in api_pages.exported_modules("miniai")} <= visited
    assert pages_with_imgs == sum(n > 0 for n in lessons.values())

    # search, through the page's search box
    browser.get(served)
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    if not box.is_displayed(): browser.find_element(By.CSS_SELECTOR, "label[for='__search']").click()  # narrow layout
    box.click()
    box.send_keys("Learner")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item a"))
    hits = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, ".md-search-result__item a")]
    assert any("/api/learner/" in h for h in hits) and any("/05_learner/" in h for h in hits), hits

    # a screenshot of the learner lesson, for a person to look at
    browser.get(served + "05_learner/")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "05_learner.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\ndocs: {len(seen)} pages checked in Chromium in {time.time() - t0:.1f}s; screenshot: {shot}")


CODE_WIDTH_WINDOW, CODE_MAX_LINE = (1400, 1000), 120


def test_lesson_code_fits_without_scrolling(served, browser):
    "At a 1400 px window, every lesson code cell whose lines are at most 120 characters shows them without scrolling."
    browser.set_window_size(*CODE_WIDTH_WINDOW)
    try:
        problems, longest_fitting, too_long = [], 0, []
        for page in _lesson_images():
            browser.get(f"{served}{page}/")
            blocks = browser.execute_script("""
                return Array.from(document.querySelectorAll('article .jp-InputArea pre')).map(p => ({
                  longest: Math.max(...p.textContent.split('\\n').map(l => l.length)),
                  scroll: p.scrollWidth, client: p.clientWidth, start: p.textContent.slice(0, 50)}));""")
            assert blocks, f"{page}: no code cells found (has the notebook theme's markup changed?)"
            for b in blocks:
                if b["longest"] > CODE_MAX_LINE: too_long.append(f"{page}: {b['longest']} chars ({b['start']!r})"); continue
                if b["scroll"] > b["client"]:
                    problems.append(f"{page}: a code cell with {b['longest']}-character lines scrolls sideways "
                                    f"({b['scroll']} px of text in {b['client']} px): {b['start']!r}")
                else: longest_fitting = max(longest_fitting, b["longest"])
        assert not problems, "\n".join(problems)
        assert longest_fitting >= 110, f"the check saw no long line that fits (longest {longest_fitting})"
        if too_long: print(f"\ndocs: {len(too_long)} code cells have lines over {CODE_MAX_LINE} characters (may scroll):\n  "
                           + "\n  ".join(too_long))
    finally:
        browser.set_window_size(1280, 1000)
