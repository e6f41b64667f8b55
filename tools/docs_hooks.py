r"""mkdocs hook (see mkdocs.yml): make a lesson page's table of contents and title match its real headings.

mkdocs-jupyter builds the TOC from a markdown rendering of the notebook, whose slugs and titles differ from the
headings nbconvert writes when a heading holds `code` (`## \`DataLoaders\`` gets the slug `_1` and an empty
title) or when two headings share a name. Headings and TOC entries come in the same order, so we pair them up,
give repeated ids a `_1`, `_2` suffix, and copy each heading's id and text into its TOC entry (and the first
heading's text into the page title, which the sidebar shows).
"""
import html as _html
import re

_HEADING = re.compile(r'(<h([1-6])\b[^>]*?\bid=")([^"]*)("[^>]*>)(.*?)(</h\2>)', re.S)
_ANCHOR = re.compile(r'<a class="anchor-link".*?</a>', re.S)


def _flat(toc):
    for item in toc:
        yield item
        yield from _flat(item.children)


def _text(inner):
    return _html.unescape(re.sub(r"<[^>]+>", "", _ANCHOR.sub("", inner))).strip()


def on_page_content(html, page, config, files):
    if not page.file.src_path.endswith(".ipynb"): return html
    seen, heads = {}, []

    def unique(m):
        base = m.group(3)
        n = seen.get(base, 0)
        seen[base] = n + 1
        new = base if n == 0 else f"{base}_{n}"
        heads.append((new, _text(m.group(5))))
        return m.group(1) + new + m.group(4) + m.group(5) + m.group(6)

    html = _HEADING.sub(unique, html)
    items = list(_flat(page.toc))
    if len(items) == len(heads):
        for item, (hid, text) in zip(items, heads): item.id, item.title = hid, text
    if heads: page.title = heads[0][1]
    return html
