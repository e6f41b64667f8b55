"""Count what the lessons show: pictures, demo cells with a visible output, picture and notebook sizes.

Over `nbs/*.ipynb` (not the `_*.ipynb` scratch notebooks), per notebook and in total:
- pictures: `image/png` outputs; the largest one's size in KB (the decoded PNG, not its base64 text);
- demo cells: code cells that are not empty and not `#| export`, `#| exporti`, `#| hide` or `#| default_exp`
  cells, and how many of them carry an output (a stream, a value, a picture; an error output does not count);
- the notebook's file size in KB.

`python tools/lesson_stats.py` prints the table; `--check` also exits non-zero naming every threshold that fails:
at least 100 pictures in all; at most a quarter of the notebooks without a picture; at least 65% of the demo
cells show an output (across the sequence); every picture <= 100 KB; every notebook <= 600 KB; 11_augment holds
at least 8 pictures; and no lesson markdown talks about the project's process.

The process-word check: the lessons speak to the student about the subject, so markdown cells must not mention
issues ("issue 22", "the issue's targets") or a target in the sense of a goal the project set ("the 0.937 target",
"target met", "short of the target"). In ML the labels are legitimately called targets ("predictions and targets",
"a target tensor", "a softer target" under label smoothing), so "target" alone is not flagged: only next to a number
or with a reach/meet/miss verb. Code and inline code are skipped. See `process_words` for the exact rule.
"""
from __future__ import annotations

import argparse, base64, json, re, sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_FLAGS = ("export", "exporti", "hide", "default_exp")
_FLAG = re.compile(r"^\s*#\s*\|\s*([\w-]+)")

# thresholds of `--check`
MIN_PICTURES, MAX_NO_PICTURE_FRAC, MIN_SHOWN_FRAC = 100, 0.25, 0.65
MAX_PICTURE_KB, MAX_NOTEBOOK_KB = 100, 600
MIN_PICTURES_IN = {"11_augment": 8}


@dataclass
class NbStats:
    "What one lesson notebook shows."
    name: str
    pictures: int = 0
    demo_cells: int = 0
    shown: int = 0
    largest_kb: float = 0.0
    size_kb: float = 0.0
    big_pictures: list = field(default_factory=list)  # (cell index, KB) of pictures over the limit
    process_words: list = field(default_factory=list)  # (cell index, the words found)


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def is_demo_cell(cell) -> bool:
    "A non-empty code cell that is not an export/hide/default_exp cell."
    if cell.get("cell_type") != "code": return False
    src = _src(cell)
    if not src.strip(): return False
    flags = {m.group(1) for line in src.splitlines() if (m := _FLAG.match(line))}
    return not (flags & set(SKIP_FLAGS))


def shows_output(cell) -> bool:
    "The cell carries an output a student can see (an error output does not count)."
    return any(o.get("output_type") != "error" for o in cell.get("outputs", []))


def picture_sizes_kb(cell) -> list[float]:
    "Decoded size in KB of each PNG picture the cell shows."
    out = []
    for o in cell.get("outputs", []):
        png = o.get("data", {}).get("image/png")
        if png is None: continue
        b64 = "".join(png) if isinstance(png, list) else png
        out.append(len(base64.b64decode(b64)) / 1024)
    return out


_NUM = r"[≥>=~]?\s*(?:\d*\.\d+|\d+(?:\.\d+)?\s*%)"  # a score: 0.937, 94%
_PROCESS = [
    re.compile(r"\bissues?\b", re.I),                                          # "issue 22", "the targets"
    re.compile(_NUM + r"\s+targets?\b|\btargets?\s+(?:of\s+)?" + _NUM, re.I),   # "the 0.937 target", "target of 0.94"
    re.compile(r"\btargets?\s+(?:met|missed|reached|hit|beaten)\b", re.I),     # "target met"
    re.compile(r"\b(?:meets?|met|reach(?:ed|es)?|beat(?:s|en)?|hits?|miss(?:ed|es)?|above|below|short\s+of)\s+"
               r"(?:the|our|its|their|each|every|a)\s+targets?\b", re.I),     # "0.0005 short of the target"
]
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_LINK_URL = re.compile(r"\]\([^)]*\)")


def process_words(md: str) -> list[str]:
    """Words in a markdown text that talk about the project's process rather than the subject.

    Flags `issue`/`issues` anywhere, and `target(s)` only where it means a goal to reach: next to a score
    ("the 0.937 target", "target of 94%"), followed by met/missed/reached/hit, or after reach/meet/beat/miss/above/
    below/short of + the ("short of the target"). The ML senses pass: "predictions and targets", "fit the targets",
    "target tensor", "a softer target" (label smoothing), "the target name" of a file. Code (fenced or inline) and
    link URLs are ignored."""
    text = _LINK_URL.sub("]()", _CODE.sub(" ", md))
    return [m.group(0) for pat in _PROCESS for m in pat.finditer(text)]


def notebook_stats(path: Path) -> NbStats:
    "Count pictures, demo cells and sizes of one notebook."
    nb = json.loads(Path(path).read_text())
    st = NbStats(Path(path).stem, size_kb=Path(path).stat().st_size / 1024)
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "markdown":
            words = process_words(_src(cell))
            if words: st.process_words.append((i, words))
            continue
        sizes = picture_sizes_kb(cell)
        st.pictures += len(sizes)
        if sizes: st.largest_kb = max(st.largest_kb, *sizes)
        st.big_pictures += [(i, round(s, 1)) for s in sizes if s > MAX_PICTURE_KB]
        if is_demo_cell(cell):
            st.demo_cells += 1
            st.shown += shows_output(cell)
    return st


def lesson_paths(nbs: Path) -> list[Path]:
    "The lesson notebooks, in file-name order (scratch `_*.ipynb` left out)."
    return sorted(p for p in Path(nbs).glob("*.ipynb") if not p.name.startswith(("_", ".")))


def collect(nbs: Path = ROOT / "nbs") -> list[NbStats]:
    return [notebook_stats(p) for p in lesson_paths(nbs)]


def table(stats: list[NbStats]) -> str:
    "A plain-text table, one row per notebook and a total."
    head = f"{'notebook':<22}{'pics':>5}{'demo':>6}{'shown':>7}{'shown%':>8}{'max pic KB':>11}{'size KB':>9}"
    rows = [head, "-" * len(head)]
    for s in stats:
        pct = 100 * s.shown / s.demo_cells if s.demo_cells else 100.0
        rows.append(f"{s.name:<22}{s.pictures:>5}{s.demo_cells:>6}{s.shown:>7}{pct:>7.0f}%{s.largest_kb:>11.1f}{s.size_kb:>9.0f}")
    demo, shown = sum(s.demo_cells for s in stats), sum(s.shown for s in stats)
    rows.append("-" * len(head))
    rows.append(f"{'total':<22}{sum(s.pictures for s in stats):>5}{demo:>6}{shown:>7}{100 * shown / max(demo, 1):>7.0f}%"
                f"{max((s.largest_kb for s in stats), default=0):>11.1f}{sum(s.size_kb for s in stats):>9.0f}")
    none = [s.name for s in stats if not s.pictures]
    rows.append(f"notebooks without a picture: {len(none)} of {len(stats)}" + (f" ({', '.join(none)})" if none else ""))
    return "\n".join(rows)


def failures(stats: list[NbStats]) -> list[str]:
    "One line per threshold that does not hold."
    fails = []
    total = sum(s.pictures for s in stats)
    if total < MIN_PICTURES: fails.append(f"pictures: {total} in all, need >= {MIN_PICTURES}")
    none = [s.name for s in stats if not s.pictures]
    if len(none) > MAX_NO_PICTURE_FRAC * len(stats):
        fails.append(f"notebooks without a picture: {len(none)} of {len(stats)}, at most {MAX_NO_PICTURE_FRAC:.0%} "
                     f"allowed ({', '.join(none)})")
    demo, shown = sum(s.demo_cells for s in stats), sum(s.shown for s in stats)
    if demo and shown / demo < MIN_SHOWN_FRAC:
        fails.append(f"demo cells with an output: {shown} of {demo} ({shown / demo:.0%}), need >= {MIN_SHOWN_FRAC:.0%}")
    for s in stats:
        for i, kb in s.big_pictures: fails.append(f"{s.name}: picture in cell {i} is {kb} KB, max {MAX_PICTURE_KB} KB")
        if s.size_kb > MAX_NOTEBOOK_KB: fails.append(f"{s.name}: notebook is {s.size_kb:.0f} KB, max {MAX_NOTEBOOK_KB} KB")
        for i, words in s.process_words: fails.append(f"{s.name}: markdown cell {i} talks about the process: {words}")
    by_name = {s.name: s for s in stats}
    for name, n in MIN_PICTURES_IN.items():
        if name not in by_name: fails.append(f"{name}: notebook missing, need >= {n} pictures")
        elif by_name[name].pictures < n: fails.append(f"{name}: {by_name[name].pictures} pictures, need >= {n}")
    return fails


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nbs", type=Path, default=ROOT / "nbs", help="the notebook folder")
    ap.add_argument("--check", action="store_true", help="exit non-zero naming each threshold that fails")
    args = ap.parse_args(argv)
    stats = collect(args.nbs)
    if not stats:
        print(f"no lesson notebooks in {args.nbs}", file=sys.stderr)
        return 2
    print(table(stats))
    if not args.check: return 0
    fails = failures(stats)
    for f in fails: print("FAIL", f)
    if not fails: print("all lesson thresholds hold")
    return 1 if fails else 0


if __name__ == "__main__": sys.exit(main())
