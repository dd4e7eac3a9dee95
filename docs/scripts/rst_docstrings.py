"""Griffe extension: render optkit's reST-flavoured Google docstrings as Markdown.

optkit's docstrings follow optax: Google-style sections, with reST for math (``.. math::`` blocks
and ``:math:`` roles), cross-references (``:func:``, ``:class:``, ``:data:``) and literal blocks
(``text::``). ``help()`` and the doctests read them as they are; for the site this extension
rewrites each docstring before mkdocstrings parses it:

- ``.. math::`` blocks become ``$$ ... $$`` display math for pymdownx.arithmatex, one block per
  blank-line-separated equation, multi-line ones wrapped in ``aligned`` (Sphinx's rule);
- ``:math:`x``` becomes ``$x$``, with ``>=`` and ``<=`` typeset as relations;
- ``:func:`name``` and friends become autorefs links to the API reference, when ``name`` is public;
- ``text::`` plus an indented block becomes ``text:`` plus a fenced Python block;
- ``Example:`` and ``Example (note):`` become griffe's ``Examples:`` doctest section (griffe
  reads the singular as an admonition), the note as its first line.

The source is not changed. Loaded by mkdocs.yml (``plugins.mkdocstrings...extensions``).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")
_MATH_ROLE = re.compile(r":math:`(?P<tex>[^`]+)`")
_XREF_ROLE = re.compile(r":(?:func|class|data|meth|attr|obj|mod):`~?(?P<name>[\w.]+)`")
_LITERAL_INTRO = re.compile(r"^(?P<indent>[ \t]*)(?P<text>\S.*?)::[ \t]*$")
_EXAMPLE_SECTION = re.compile(r"^(?P<indent>[ \t]*)Examples?(?: \((?P<note>[^)]*)\))?:[ \t]*$")


def _public_names() -> dict[str, str]:
    """Short name -> identifier of its API-reference entry, for every public optkit name."""
    import optkit

    names = {name: f"optkit.{name}" for name in optkit.__all__}
    names.update({name: f"optkit.schedules.{name}" for name in optkit.schedules.__all__})
    return names


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines indented deeper than ``indent`` from ``start`` on (blank lines included, trailing
    ones dropped) and the index after them."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > indent):
        end += 1
    block = lines[start:end]
    while block and not block[-1].strip():
        block.pop()
    return block, start + len(block)


def _dedent(block: list[str]) -> list[str]:
    while block and not block[0].strip():
        block = block[1:]
    depth = min((_indent_of(line) for line in block if line.strip()), default=0)
    return [line[depth:] for line in block]


def _tex(source: str) -> str:
    """Relations written as ASCII in the docstrings, typeset."""
    return source.replace(">=", r"\ge ").replace("<=", r"\le ")


def _display_math(indent: str, tex_lines: list[str]) -> list[str]:
    """``$$`` blocks for arithmatex, one per blank-line-separated equation."""
    out: list[str] = []
    equations: list[list[str]] = [[]]
    for line in tex_lines:
        if line.strip():
            equations[-1].append(line.rstrip())
        elif equations[-1]:
            equations.append([])
    for equation in equations:
        if not equation:
            continue
        body = [_tex(line) for line in equation]
        text = "\n".join(body)
        if ("\\\\" in text or "&" in text) and not text.lstrip().startswith("\\begin"):
            body = ["\\begin{aligned}", *body, "\\end{aligned}"]
        out += ["", f"{indent}$$", *(f"{indent}{line}" for line in body), f"{indent}$$", ""]
    return out


def convert(docstring: str, public: dict[str, str]) -> str:
    """The Markdown form of one reST-flavoured Google docstring."""
    lines = docstring.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        math = _MATH_BLOCK.match(line)
        literal = _LITERAL_INTRO.match(line)
        example = _EXAMPLE_SECTION.match(line)
        if math:
            indent = math["indent"]
            block, i = _block(lines, i + 1, len(indent))
            tex = ([math["first"]] if math["first"].strip() else []) + _dedent(block)
            out += _display_math(indent, tex)
            continue
        if literal and not literal["text"].startswith(".."):
            indent = literal["indent"]
            block, end = _block(lines, i + 1, len(indent))
            if any(line.strip() for line in block):
                out += [f"{indent}{literal['text']}:", "", f"{indent}```python"]
                out += [f"{indent}{line}" if line.strip() else "" for line in _dedent(block)]
                out += [f"{indent}```"]
                i = end
                continue
        if example:
            # griffe reads only "Examples:" as the doctest section ("Example:" is an admonition).
            indent = example["indent"]
            out.append(f"{indent}Examples:")
            if example["note"]:
                out.append(f"{indent}    {example['note'][:1].upper()}{example['note'][1:]}:")
            i += 1
            continue
        out.append(line)
        i += 1

    text = "\n".join(out)
    text = _MATH_ROLE.sub(lambda m: f"${_tex(m['tex'])}$", text)

    def xref(match: re.Match[str]) -> str:
        name = match["name"]
        short = name.rsplit(".", 1)[-1]
        identifier = public.get(short)
        return f"[`{short}`][{identifier}]" if identifier else f"`{short}`"

    return _XREF_ROLE.sub(xref, text)


class RstDocstrings(Extension):
    """Rewrite every docstring of the loaded package from reST-isms to Markdown."""

    def __init__(self) -> None:
        super().__init__()
        self._public = _public_names()

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value, self._public)
