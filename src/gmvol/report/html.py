"""Small HTML building blocks (tables, figures, notes, the page) with escaping done in one place.

Every piece of text from an input file goes through `esc`; functions take already-built HTML only
where their parameter says so (`Cell.html`, `body`), so nothing from a file can inject markup.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.35em; margin-top: 2.2em; padding-bottom: 0.25em; border-bottom: 2px solid #d0d7de; }
h3 { font-size: 1.1em; margin-top: 1.6em; }
p, li { max-width: 80ch; }
.subtitle { color: #57606a; margin-top: 0; }
nav a { margin-right: 1em; }
a { color: #0969da; }
table { border-collapse: collapse; margin: 0.6em 0 0.4em; font-size: 0.9em; }
th, td { padding: 5px 9px; border-bottom: 1px solid #d8dee4; vertical-align: top; }
th { background: #f0f3f6; text-align: left; font-weight: 600; border-bottom: 2px solid #afb8c1; }
th.num { text-align: right; }
tbody tr:nth-child(even) { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.baseline td { color: #57606a; font-style: italic; }
tr.baseline td:first-child { font-style: normal; }
tr.first-baseline td { border-top: 2px solid #afb8c1; }
td small { color: #6e7781; font-style: normal; }
td:first-child { white-space: nowrap; }
.table-wrap { overflow-x: auto; }
.legend { color: #57606a; font-size: 0.85em; margin-top: 0.2em; }
.verdicts li { margin: 0.2em 0; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 18px; }
figure { margin: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d8dee4; }
figcaption { font-size: 0.88em; color: #424a53; margin-top: 0.35em; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; padding: 8px 12px;
        font-size: 0.9em; }
.explain { background: #f6f8fa; border-left: 4px solid #0969da; padding: 8px 14px; }
pre { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 4px; padding: 12px;
      overflow-x: auto; font-size: 0.85em; }
footer { margin-top: 3em; padding-top: 0.8em; border-top: 1px solid #d0d7de; color: #57606a;
         font-size: 0.82em; }
footer code { word-break: break-all; }
"""


@dataclass(frozen=True)
class Cell:
    """One table cell: ready HTML, right-aligned if numeric, bold if it is the best in its column."""

    html: str
    numeric: bool = False
    bold: bool = False


def esc(text: object) -> str:
    """`text` escaped for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def text_cell(text: object) -> Cell:
    """A left-aligned cell holding escaped `text`."""
    return Cell(esc(text))


def num_cell(text: str, bold: bool = False) -> Cell:
    """A right-aligned cell holding an already formatted number."""
    return Cell(esc(text), numeric=True, bold=bold)


def _attrs(**attrs: str | None) -> str:
    """` name="value"` for each non-empty attribute (class_ -> class), escaped."""
    return "".join(f' {name.rstrip("_")}="{esc(value)}"' for name, value in attrs.items() if value)


def table(head: Sequence[tuple[str, str]], rows: Sequence[Sequence[Cell]],
          row_classes: Sequence[str] | None = None) -> str:
    """A table; `head` holds (label, tooltip) pairs, numeric columns follow their first row's cells."""
    aligned = [cell.numeric for cell in rows[0]] if rows else [False] * len(head)
    ths = "".join(f"<th{_attrs(class_='num' if num else None, title=tip)}>{esc(label)}</th>"
                  for (label, tip), num in zip(head, aligned))
    body = []
    for i, row in enumerate(rows):
        tds = "".join(f"<td{_attrs(class_='num' if c.numeric else None)}>"
                      f"{f'<b>{c.html}</b>' if c.bold else c.html}</td>" for c in row)
        body.append(f"<tr{_attrs(class_=row_classes[i] if row_classes else None)}>{tds}</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def note(text: str) -> str:
    """A highlighted note (e.g. a missing input), from plain text."""
    return f'<p class="note">{esc(text)}</p>'


def figure(uri: str | None, alt: str, caption: str, missing_path: str, wide: bool = False) -> str:
    """An embedded image with alt text and caption, or a note naming the missing file."""
    body = (f"<img{_attrs(src=uri, alt=alt)}>" if uri
            else note(f"Figure not available: {missing_path} was not found."))
    return f"<figure{_attrs(class_='wide' if wide else None)}>{body}<figcaption>{esc(caption)}</figcaption></figure>"


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document (inline CSS, no external resources).

    Non-ASCII characters (², —) become character references, so the file reads the same whatever
    encoding the writer's locale picks.
    """
    document = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n"
                f"<body><main>\n{body}\n</main></body>\n</html>\n")
    return document.encode("ascii", "xmlcharrefreplace").decode("ascii")
