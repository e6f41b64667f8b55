"""Count what the lessons show: pictures, demo cells with a visible output, picture and notebook sizes.

Over `nbs/*.ipynb` (not the `_*.ipynb` scratch notebooks), per notebook and in total:
- pictures: `image/png` outputs; the largest one's size in KB (the decoded PNG, not its base64 text);
- demo cells: code cells that are not empty and not `#| export`, `#| exporti`, `#| hide` or `#| default_exp`
  cells, and how many of them carry an output (a stream, a value, a picture; an error output does not count);
- the notebook's file size in KB.

`python tools/lesson_stats.py` prints the table; `--check` also exits non-zero naming every threshold that fails:
at least 120 pictures in all; at most 15% of the lessons without a picture (the exercises' check
notebooks, `*_checking`, `*_checks_*`, `*_exercises`, print one line each and are not counted); at least 85% of the demo
cells show an output (across the sequence); every picture <= 100 KB; every notebook <= 600 KB; 11_augment holds
at least 12 pictures; no lesson markdown talks about the project's process; and lessons 01-11a speak about their
subject only, naming the machine at most once.

The process-word check: the lessons speak to the student about the subject, so markdown cells must not mention
issues ("issue 22", "the issue's targets") or a target in the sense of a goal the project set ("the 0.937 target",
"target met", "short of the target"). In ML the labels are legitimately called targets ("predictions and targets",
"a target tensor", "a softer target" under label smoothing), so "target" alone is not flagged: only next to a number
or with a reach/meet/miss verb. Code and inline code are skipped. See `process_words` for the exact rule.

The subject-only check, for the teaching lessons 01-11a (not 12*, 13_recipes, 20*: hardware, recipes and benchmarks
are their subject): their markdown must not point at the repository's `bench/` or `tests/` files, talk about accuracy
records ("the 20-epoch record", "the record recipes"), "the lesson's number", the course's internal file numbers
("Lesson 002"), thread settings (`OMP_NUM_THREADS`, "one thread") or the load on the machine ("oversubscribed", "other
jobs", "a quieter machine"), and must name the machine ("2-core CPU", "this machine", a CPU or GPU model) at most
once. "Record the losses", `RecorderCB`, "recorded" and "a shared colour scale" are the subject's English and pass.
See `subject_words` and `machine_mentions` for the exact rule. Each finding is printed as notebook, markdown cell
index and id, and the words found, so the notebook's owner can fix it.
"""
from __future__ import annotations

import argparse, base64, json, re, sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_FLAGS = ("export", "exporti", "hide", "default_exp")
_FLAG = re.compile(r"^\s*#\s*\|\s*([\w-]+)")

# thresholds of `--check`
MIN_PICTURES, MAX_NO_PICTURE_FRAC, MIN_SHOWN_FRAC = 120, 0.15, 0.85
MAX_PICTURE_KB, MAX_NOTEBOOK_KB = 100, 600
MIN_PICTURES_IN = {"11_augment": 12}
MAX_MACHINE_MENTIONS = 1  # per lesson 01-11a
# the exercises' machinery (11b_checking, 11c-11i_checks_*, 11j_exercises): checks that print one line, no picture to draw
CHECK_NOTEBOOK = re.compile(r"_(checking|checks_\w+|exercises)$")


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
    subject_words: list = field(default_factory=list)  # (cell index, cell id, the words found): lessons 01-11a only
    machine_mentions: list = field(default_factory=list)  # (cell index, the words): lessons 01-11a only


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


# The subject-only rule of the teaching lessons 01-11a. Applied to the whole markdown (inline and fenced code and link
# URLs included): file paths and thread variables are what a reader would copy.
SUBJECT_ONLY = range(1, 12)  # lesson numbers (the leading digits of the notebook's name) the rule covers
_IN_CODE_TOO = [
    re.compile(r"(?<![\w.-])(?:\.\./|\./)?(?:bench|tests)/[\w./*-]*"),              # bench/data.py, tests/test_init.py
    re.compile(r"\btest_\w+\.py\b"),                                              # test_init.py
    re.compile(r"\b(?:OMP|MKL|OPENBLAS|NUMEXPR|VECLIB)_NUM_THREADS\b"),            # thread settings
    re.compile(r"\b(?:torch\.)?(?:set|get)_num(?:_interop)?_threads\b"),
    re.compile(r"\bRECORDS\b|\brecord_model\b|\brecord(?:5|20|50)\b"),               # the record recipes' names
    re.compile(r"\b00\d_[0-9a-f]{6,}\b"),                                          # a transcript's file name
]
_VERB_BEFORE = {"to", "we", "you", "they", "i", "it", "can", "could", "will", "would", "should", "must", "may",
                "might", "also", "and", "or", "then", "not", "which", "that", "who", "callbacks", "hooks"}
_RECORD_NOUN = (r"(?:recipes?|runs?|hunt(?:ing|s)?|models?|resnets?|trainings?|attempts?|figures?|numbers?|"
                r"accurac(?:y|ies)|scores?|results?|settings?|holders?)")
_RECORD_ADJ = re.compile(r"\brecord[- ]" + _RECORD_NOUN + r"\b", re.I)  # "the record recipes"; not "to record runs"
# Applied to the prose (code and link URLs removed).
_IN_PROSE = [
    re.compile(r"\baccuracy[- ]records?\b", re.I),                                   # "the accuracy records"
    _RECORD_ADJ,
    re.compile(r"\b(?:new|previous|old|current|standing|(?:\d+|five|twenty|fifty)[- ]epochs?)\s+records?\b", re.I),
    re.compile(r"\b(?:beat|beats|beating|beaten|broke|break|breaks|breaking|set|sets|hold|holds|held|chase|chasing)\s+"
               r"(?:the|a|our|its|their|this|that)\s+(?:[\w-]*epoch\s+|accuracy\s+)?records?\b", re.I),
    re.compile(r"\brecords?\s+(?:of|at|is|was|stands\s+at)\s+[~≥>]?\s*\d*\.\d+", re.I),      # "the record of 0.9545"
    re.compile(r"\blesson'?s\s+(?:single\s+)?numbers?\b", re.I),                        # "the lesson's number"
    re.compile(r"\blessons?\s+0\d\d\b", re.I),                                          # "Lesson 002": a file number
    re.compile(r"\b(?:this|our|the)\s+project(?:'s|s)?\b", re.I),                         # "this project's CPU"
    re.compile(r"\b(?:one|two|three|four|a\s+single|\d+)\s+(?:CPU\s+)?threads?\b", re.I),   # "one thread per run"
    re.compile(r"\boversubscri\w+", re.I),
    re.compile(r"\b(?:other|competing|background|concurrent)\s+(?:jobs?|sessions?|workloads?|users?)\b", re.I),
    re.compile(r"\bloading\s+heavily\b|\bheavily\s+loaded\b|\bunder\s+(?:heavy\s+)?load\b|\bwhose\s+load\b|"
               r"\b(?:machine|CPU|system)(?:'s)?\s+load\b|\bload\s+on\s+the\s+(?:machine|CPU|cores?)\b", re.I),
    re.compile(r"\b(?:quiet(?:er)?|idle|busy|busier|shared|loaded)\s+(?:\d+-core\s+)?"
               r"(?:machines?|CPUs?|cores?|computers?|hosts?|boxes)\b", re.I),          # "a quieter machine"
    re.compile(r"\bwaiting\s+for\s+a\s+core\b", re.I),
]
# A machine named: counted per sentence, at most one per notebook.
_MACHINE = [
    re.compile(r"\b(?:\d+|single|dual|quad)[- ]core\b|\b(?:one|two|four|six|eight|sixteen|\d+)\s+"
               r"(?:CPU\s+|physical\s+|logical\s+)?cores\b", re.I),                      # "2-core", "two cores"
    re.compile(r"\b(?:this|our|my|a\s+quiet(?:er)?|a\s+busy|a\s+shared)\s+"
               r"(?:machine|computer|box|host|laptop|server|hardware)s?\b", re.I),      # "this machine"
    re.compile(r"\b(?:this|our)\s+(?:CPU|GPU)s?\b", re.I),
    re.compile(r"\b(?:[HB]\d00|GH200|A100|A10G?|A6000|V100|P100|T4|MI[23]\d0X?|RTX\s?\d{4}|GTX\s?\d{3,4}|Quadro|Xeon|"
               r"EPYC|Ryzen|Threadripper|Core\s+i[3579]|Sapphire\s+Rapids|Ice\s+Lake|Cascade\s+Lake|Skylake|"
               r"Graviton\d?|Apple\s+M[1-4]|M[1-4]\s+(?:Pro|Max|Ultra))\b"),              # CPU and GPU models
    re.compile(r"\bx86[-_]64\b|\baarch64\b", re.I),
]
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n\s*\n|\n\s*[-*+]\s+|\n#+\s")


def _prose(md: str) -> str:
    "The markdown without code (fenced or inline) and without link URLs."
    return _LINK_URL.sub("]()", _CODE.sub(" ", md))


def _words(m) -> str: return " ".join(m.group(0).split())


def _find(patterns, text) -> list[str]:
    "Every match of `patterns` in `text`, in order of position; a match inside an earlier, longer one is left out."
    hits, end = [], -1
    for m in sorted((m for pat in patterns for m in pat.finditer(text)), key=lambda m: (m.start(), -m.end())):
        if m.end() <= end: continue
        hits.append(_words(m)); end = m.end()
    return hits


def _is_verb(text: str, m) -> bool:
    "A `record ...` match that follows a subject or `to` (\"we record runs\", \"to record settings\") is the verb."
    before = re.findall(r"[\w']+", text[max(0, m.start() - 30):m.start()])
    return bool(before) and before[-1].lower() in _VERB_BEFORE


def subject_words(md: str) -> list[str]:
    """Words in a lesson's markdown that speak about the project rather than the subject (lessons 01-11a).

    Flags `bench/` and `tests/` paths and `test_*.py` names, thread settings (`OMP_NUM_THREADS`, `set_num_threads`,
    "one thread"), the record recipes' names (`RECORDS`, `record_model`), accuracy records ("accuracy records", "the
    record recipes", "the 20-epoch record", "beat the record", "the record of 0.9545"), "the lesson's number", the
    course's file numbers ("Lesson 002"), "this project", and talk about the machine's load ("oversubscribed", "other
    jobs", "loading heavily", "a quieter machine", "waiting for a core"). The subject's own English passes: "record
    the losses", "RecorderCB records the lr", "a checkpoint resumes the record", "recorded", "a shared colour scale",
    "Lesson 11 (2019)"."""
    prose = _prose(md)
    found = _find(_IN_CODE_TOO, md)
    for pat in _IN_PROSE:
        found += [_words(m) for m in pat.finditer(prose)
                  if not (pat is _RECORD_ADJ and _is_verb(prose, m))]
    return found


def machine_mentions(md: str) -> list[str]:
    """The places a lesson's markdown names the machine it ran on: one entry per sentence that names it.

    A machine is named by its cores ("2-core CPU", "two cores"), as "this machine" / "our CPU", or by a CPU or GPU
    model ("H100", "Xeon", "x86-64"). "Every machine", "when the machine is online" and "a GPU" are not a machine
    named."""
    out = []
    for sentence in _SENTENCE.split(_prose(md)):
        words = _find(_MACHINE, sentence)
        if words: out.append(" ".join(words))
    return out


def _lesson_number(name: str):
    m = re.match(r"(\d+)", name)
    return int(m.group(1)) if m else None


def notebook_stats(path: Path) -> NbStats:
    "Count pictures, demo cells and sizes of one notebook."
    nb = json.loads(Path(path).read_text())
    st = NbStats(Path(path).stem, size_kb=Path(path).stat().st_size / 1024)
    subject_only = _lesson_number(st.name) in SUBJECT_ONLY
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "markdown":
            md = _src(cell)
            words = process_words(md)
            if words: st.process_words.append((i, words))
            if subject_only:
                if words := subject_words(md): st.subject_words.append((i, cell.get("id", "?"), words))
                st.machine_mentions += [(i, w) for w in machine_mentions(md)]
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
    lessons = [s for s in stats if not CHECK_NOTEBOOK.search(s.name)]
    none = [s.name for s in lessons if not s.pictures]
    if len(none) > MAX_NO_PICTURE_FRAC * len(lessons):
        fails.append(f"lessons without a picture: {len(none)} of {len(lessons)} (the check notebooks not counted), "
                     f"at most {MAX_NO_PICTURE_FRAC:.0%} allowed ({', '.join(none)})")
    demo, shown = sum(s.demo_cells for s in stats), sum(s.shown for s in stats)
    if demo and shown / demo < MIN_SHOWN_FRAC:
        fails.append(f"demo cells with an output: {shown} of {demo} ({shown / demo:.0%}), need >= {MIN_SHOWN_FRAC:.0%}")
    for s in stats:
        for i, kb in s.big_pictures: fails.append(f"{s.name}: picture in cell {i} is {kb} KB, max {MAX_PICTURE_KB} KB")
        if s.size_kb > MAX_NOTEBOOK_KB: fails.append(f"{s.name}: notebook is {s.size_kb:.0f} KB, max {MAX_NOTEBOOK_KB} KB")
        for i, words in s.process_words: fails.append(f"{s.name}: markdown cell {i} talks about the process: {words}")
        for i, cid, words in s.subject_words:
            fails.append(f"{s.name}: markdown cell {i} (id {cid}) speaks about the project, not the subject: {words}")
        if len(s.machine_mentions) > MAX_MACHINE_MENTIONS:
            where = "; ".join(f"cell {i}: {w!r}" for i, w in s.machine_mentions)
            fails.append(f"{s.name}: names the machine {len(s.machine_mentions)} times, at most {MAX_MACHINE_MENTIONS} "
                         f"(where a number depends on it): {where}")
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
