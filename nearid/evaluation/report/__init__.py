"""``nearid report RUN``: ``RUN/results.json`` as Markdown and as one self-contained HTML page.

``sections`` builds the tables, ``figures`` the plots, ``blocks`` holds what both are made of, and ``render``
writes them out. The page is built once as neutral blocks and written twice.
"""

from nearid.evaluation.report.blocks import MISSING
from nearid.evaluation.report.render import ReportFiles, build_sections, render_html, render_markdown, write_report


__all__ = ["MISSING", "ReportFiles", "build_sections", "render_html", "render_markdown", "write_report"]
