"""The documentation's links hold: README.md and docs/*.md.

Every relative link (``[text](path)``, ``![alt](path)``, with an optional
``#anchor``) names a file that exists, every anchor names a heading of its
page (GitHub's slugs), every docs page can be reached from README.md by
following links, and every ``docs/<name>.md`` that a script in tools/
mentions exists. http(s) and mailto links are not checked. The checker is
tested on hand-made pages first, so a checker that finds nothing fails.
"""
import re
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r'^\s*(```|~~~)')
_HEADING = re.compile(r'^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
# [text](target) and ![alt](target); the text may hold one level of [...]
_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
_CODE_SPAN = re.compile(r'(`+)(.+?)\1')
_DOCS_MENTION = re.compile(r'docs/[\w.-]+\.md(?:#[\w-]+)?')


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, code spans blanked out."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(_CODE_SPAN.sub(lambda m: ' ' * len(m.group(0)), line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup off, lowercase, punctuation
    but '-' and '_' dropped, each space a '-'."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link keeps its text
    text = re.sub(r'<[^>]+>', '', text).strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f'{base}-{n}')
    return out


def links(text: str) -> list[str]:
    """The link targets of a markdown text, in order (code left out)."""
    return [m.group(1) for line in prose_lines(text) for m in _LINK.finditer(line)]


def is_external(target: str) -> bool:
    return re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I) is not None


def check_link(page: Path, target: str) -> str | None:
    """What is wrong with ``target`` linked from ``page``, or None."""
    if is_external(target):
        return None
    path, _, anchor = target.partition('#')
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return f'{page.name}: link to {target}: {path} does not exist'
    if anchor and dest.suffix == '.md' and anchor not in anchors(dest.read_text()):
        return f'{page.name}: link to {target}: no heading #{anchor} in {dest.name}'
    return None


def link_problems(pages: list[Path]) -> list[str]:
    problems = []
    for page in pages:
        for target in links(page.read_text()):
            problem = check_link(page, target)
            if problem:
                problems.append(problem)
    return problems


def reachable(start: Path) -> set[Path]:
    """The markdown pages reached from ``start`` by following relative links."""
    seen = {start.resolve()}
    todo = deque([start.resolve()])
    while todo:
        page = todo.popleft()
        for target in links(page.read_text()):
            path = target.partition('#')[0]
            if is_external(target) or not path.endswith('.md'):
                continue
            dest = (page.parent / path).resolve()
            if dest.exists() and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    return seen


def unreachable(root: Path) -> list[str]:
    found = reachable(root / 'README.md')
    return sorted(p.name for p in (root / 'docs').glob('*.md') if p.resolve() not in found)


def mentioned_docs_problems(root: Path) -> list[str]:
    """``docs/<name>.md`` (with its #anchor) named in tools/*.sh and tools/*.py."""
    problems = []
    for script in sorted([*root.glob('tools/*.sh'), *root.glob('tools/*.py')]):
        for mention in _DOCS_MENTION.findall(script.read_text()):
            path, _, anchor = mention.partition('#')
            dest = root / path
            if not dest.exists():
                problems.append(f'{script.name} names {mention}: {path} does not exist')
            elif anchor and anchor not in anchors(dest.read_text()):
                problems.append(f'{script.name} names {mention}: no such heading in {path}')
    return problems


def doc_pages(root: Path) -> list[Path]:
    return [root / 'README.md', *sorted((root / 'docs').glob('*.md'))]


# ------------------------------------------------------------ the checker itself

def test_slugs_follow_githubs_rules():
    assert slug('Does it beat random? Comparing strategies over seeds') == \
        'does-it-beat-random-comparing-strategies-over-seeds'
    assert slug('MMAL — active learning') == 'mmal--active-learning'
    assert slug('Real images for the benchmarks (`configs/real/`)') == \
        'real-images-for-the-benchmarks-configsreal'
    assert slug('People as the oracle: query, label, ingest, serve') == \
        'people-as-the-oracle-query-label-ingest-serve'
    assert slug('[GPU](x.md) and snake_case') == 'gpu-and-snake_case'
    assert anchors('# A\n## A\n```\n# not a heading\n```\n### B!\n') == {'a', 'a-1', 'b'}


def test_the_checker_finds_broken_links_anchors_and_lost_pages(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'tools').mkdir()
    (tmp_path / 'README.md').write_text(
        '# Title\n\nSee [a](docs/a.md), [its part](docs/a.md#part-two), '
        '[gone](docs/gone.md), [no part](docs/a.md#part-three), ![img](pic.png), '
        '[up](#title), [web](https://example.com/x.md).\n\n'
        '```\n[in code](docs/code.md)\n```\nand `[span](docs/span.md)`\n')
    (tmp_path / 'docs' / 'a.md').write_text('# A\n\n## Part two\n\n[back](../README.md#nope)\n')
    (tmp_path / 'docs' / 'lost.md').write_text('# Nobody links here\n')
    (tmp_path / 'tools' / 'x.sh').write_text('# see docs/a.md#part-two and docs/missing.md\n')
    (tmp_path / 'tools' / 'y.py').write_text('"""docs/a.md#part-9"""\n')

    problems = link_problems(doc_pages(tmp_path))
    assert problems == [
        'README.md: link to docs/gone.md: docs/gone.md does not exist',
        'README.md: link to docs/a.md#part-three: no heading #part-three in a.md',
        'README.md: link to pic.png: pic.png does not exist',
        'a.md: link to ../README.md#nope: no heading #nope in README.md',
    ]
    assert unreachable(tmp_path) == ['lost.md']
    assert mentioned_docs_problems(tmp_path) == [
        'x.sh names docs/missing.md: docs/missing.md does not exist',
        'y.py names docs/a.md#part-9: no such heading in docs/a.md',
    ]

    # fixed, the same pages pass
    (tmp_path / 'README.md').write_text(
        '# Title\n\n[a](docs/a.md#part-two) [lost](docs/lost.md) [up](#title)\n')
    (tmp_path / 'docs' / 'a.md').write_text('# A\n\n## Part two\n\n[back](../README.md#title)\n')
    (tmp_path / 'tools' / 'x.sh').write_text('# see docs/a.md#part-two\n')
    (tmp_path / 'tools' / 'y.py').write_text('"""docs/lost.md"""\n')
    assert link_problems(doc_pages(tmp_path)) == []
    assert unreachable(tmp_path) == []
    assert mentioned_docs_problems(tmp_path) == []


# ------------------------------------------------------------------- the docs

def test_every_relative_link_and_anchor_in_the_docs_resolves():
    assert link_problems(doc_pages(REPO)) == []


def test_every_docs_page_is_reachable_from_the_readme():
    assert unreachable(REPO) == []


def test_docs_pages_named_by_the_tools_exist():
    assert mentioned_docs_problems(REPO) == []
