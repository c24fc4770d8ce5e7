"""Reports to look at: a quantize report (its JSON) as one self-contained HTML page.

* :mod:`.html`    - the page: sections of tables and inline SVG pictures, no scripts,
  no external files;
* :mod:`.figures` - the pictures, drawn with matplotlib's SVG backend (object API, no
  pyplot: drawing changes no global state).

Rendering returns text; writing it is the caller's (``ristretto report``, ``ristretto
quantize --report-html``). Nothing here prints.

What it may import: ``quantize`` (category names), ``cost`` (energy units), ``caffe`` (reading files),
``errors``; never ``commands``.
"""
from .html import SECTIONS, check_report, read_report, render_html

__all__ = ["SECTIONS", "check_report", "read_report", "render_html"]
