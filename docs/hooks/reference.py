"""mkdocs hook: fills the configuration page from the constructors themselves (``suneung_lit.reference``)."""

from __future__ import annotations

MARKER = "<!-- configuration reference: generated -->"
PRETRAIN_MARKER = "<!-- pretrain reference: generated -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown and PRETRAIN_MARKER not in markdown:
        return markdown
    from suneung_lit.reference import markdown as reference
    from suneung_lit.reference import pretrain_sections

    return markdown.replace(MARKER, reference()).replace(PRETRAIN_MARKER, reference(pretrain_sections()))
