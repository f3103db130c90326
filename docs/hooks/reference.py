"""mkdocs hook: fills the configuration page from the constructors themselves (``suneung_lit.reference``)."""

from __future__ import annotations

MARKER = "<!-- configuration reference: generated -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    from suneung_lit.reference import markdown as reference

    return markdown.replace(MARKER, reference())
