"""Plain-text tables and wrapped lines for the CLI, readable at any terminal width: nothing is ever cut.

Written to a terminal, a table wider than the terminal turns into one block of `column: value` lines per row,
and long lines wrap at word boundaries with a hanging indent. Written to a file or a pipe (CI logs, `| grep`),
rows stay on one line each, however long, so every value can be found and copied whole.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import sys
import textwrap
from typing import Sequence


def terminal_width(stream=None) -> int | None:
    """Columns of the terminal `stream` (default stdout) writes to, or None when it is not a terminal."""
    stream = stream or sys.stdout
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return max(shutil.get_terminal_size().columns, 20)


def wrap(text: str, indent: int = 0, width: int | None = None) -> str:
    """`text` wrapped to `width` (None: no wrapping) with `indent` spaces before every line after the first."""
    if width is None or len(text) <= width:
        return text
    return "\n".join(textwrap.wrap(text, width=width, subsequent_indent=" " * indent, break_long_words=False,
                                   break_on_hyphens=False)) or text


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[str] = (),
          width: int | None = None) -> str:
    """Aligned columns (numbers right-aligned for the headers in `right`); blocks of `header: value` lines per
    row when the columns do not fit `width`."""
    cells = [[("–" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    total = sum(widths) + 2 * (len(headers) - 1)
    if width is not None and total > width:
        label = max(len(h) for h in headers)
        blocks = []
        for r in cells:
            blocks.append("\n".join(wrap(f"{h:<{label}}  {v}", label + 2, width) for h, v in zip(headers, r)))
        return "\n\n".join(blocks)

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if h in right else v.ljust(w)
                         for h, v, w in zip(headers, values, widths)).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths])] + [line(r) for r in cells])


def slug(text: str, n: int = 48) -> str:
    """A filesystem-safe short name for ``text`` with a hash suffix (different texts never collide)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[-n:] or "x"
    return f"{base}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
