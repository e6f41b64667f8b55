"""API reference pages for the docs site: one markdown page per exported module of the package.

Every name in a module's `__all__` gets a section with its signature and docstring (classes also list their
public methods). A name that the module re-exports from another module is listed too, with a link to the page
where it is defined. Run directly to write the pages: `python tools/api_pages.py OUT_DIR`.
"""
from __future__ import annotations

import argparse, importlib, inspect, pkgutil, re, textwrap
from pathlib import Path

_ADDR = re.compile(r"<(function|class|built-in function|module) '?([\w.]+)'?(?: at 0x[0-9a-f]+)?>")


def _clean(s: str) -> str:
    "Turn `<function mse_loss at 0x..>` / `<class 'torch.optim.SGD'>` in a signature into plain, stable names."
    return _ADDR.sub(lambda m: m.group(2), s)


def _signature(name: str, obj, prefix: str, method: bool = False) -> str:
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError):
        if inspect.isclass(obj): return f"{prefix}{name}({', '.join(b.__name__ for b in obj.__bases__)})"
        return f"{prefix}{name}(...)"
    params = [_clean(str(p)) for p in sig.parameters.values()]
    if method and params and params[0] in ("self", "cls"): params = params[1:]
    ret = "" if sig.return_annotation is inspect.Signature.empty else f" -> {_clean(inspect.formatannotation(sig.return_annotation))}"
    one_line = f"{prefix}{name}({', '.join(params)}){ret}"
    if len(one_line) <= 88: return one_line
    return f"{prefix}{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){ret}"


def _doc(obj) -> str:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else "*No docstring.*"


def _value(obj) -> str:
    r = _clean(repr(obj))
    return r if len(r) <= 300 else r[:297] + "..."


def exported_modules(package: str) -> list[str]:
    "Modules of `package` (not starting with `_`, plus `__main__`) in name order."
    pkg = importlib.import_module(package)
    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_") or m.name == "__main__"]
    return [f"{package}.{n}" for n in sorted(names)]


def page_name(modname: str) -> str:
    "File name (without .md) of a module's API page: `miniai.learner` -> `learner`, `miniai.__main__` -> `main`."
    return modname.split(".")[-1].strip("_")


def symbol_index(package: str) -> dict[str, list[tuple[str, str]]]:
    "name -> [(api page, anchor)] for every exported name, at the module that defines it."
    idx: dict[str, list[tuple[str, str]]] = {}
    for modname in exported_modules(package):
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            home = getattr(obj, "__module__", None)
            if home and home != modname and home.startswith(package + "."): continue  # a re-export
            idx.setdefault(name, []).append((page_name(modname), name))
    return idx


def _entry(name: str, obj, modname: str, package: str) -> list[str]:
    out = [f"## {name} {{ #{name} }}", ""]
    home = getattr(obj, "__module__", None)
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        kind = "class " if inspect.isclass(obj) else ""
        out += ["```python", _signature(name, obj, kind), "```", ""]
    else:
        out += ["```python", f"{name} = {_value(obj)}", "```", ""]
    if home and home != modname and home.startswith(package + "."):
        out += [f"Re-exported here; defined in [`{home}`]({page_name(home)}.md#{name}).", ""]
        return out
    if inspect.isclass(obj) or inspect.isfunction(obj):
        out += [_doc(obj), ""]
    if inspect.isclass(obj):
        for mname, member in vars(obj).items():
            if mname.startswith("_"): continue
            fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            if isinstance(fn, property):
                out += [f"### {name}.{mname} {{ #{name}.{mname} }}", "", f"*property* — {_doc(fn)}", ""]
            elif inspect.isfunction(fn):
                out += [f"### {name}.{mname} {{ #{name}.{mname} }}", "", "```python", _signature(mname, fn, f"{name}.", method=True),
                        "```", "", _doc(fn), ""]
    return out


def module_page(modname: str, package: str) -> str:
    mod = importlib.import_module(modname)
    names = list(getattr(mod, "__all__", []))
    summary = (inspect.getdoc(mod) or "").split("\n\n")[0]
    lines = [f"# {modname}", "", summary, ""]
    if not names:
        lines += ["This module exports no names (`__all__` is empty); it is a command-line entry point.", ""]
    else:
        lines += ["Exported names: " + ", ".join(f"[`{n}`](#{n})" for n in names) + ".", ""]
    for n in names:
        if not hasattr(mod, n): raise ValueError(f"{modname}.__all__ lists {n!r}, which the module does not define")
        lines += _entry(n, getattr(mod, n), modname, package)
    return "\n".join(lines)


def write_api_pages(out_dir: Path, package: str = "miniai") -> list[str]:
    "Write `out_dir/<module>.md` for each module and `out_dir/index.md`; return the page paths relative to out_dir."
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages, rows = [], []
    for modname in exported_modules(package):
        fname = page_name(modname) + ".md"
        (out_dir / fname).write_text(module_page(modname, package), encoding="utf-8")
        pages.append(fname)
        mod = importlib.import_module(modname)
        summary = (inspect.getdoc(mod) or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        rows.append(f"| [`{modname}`]({fname}) | {len(getattr(mod, '__all__', []))} | {summary} |")
    index = [f"# API reference", "", f"Every name exported by `{package}`, module by module, from the signatures and"
             " docstrings of the installed package.", "", "| module | names | summary |", "| --- | ---: | --- |", *rows, ""]
    (out_dir / "index.md").write_text("\n".join(index), encoding="utf-8")
    return ["index.md", *pages]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--package", default="miniai")
    a = ap.parse_args()
    print("\n".join(write_api_pages(a.out_dir, a.package)))
