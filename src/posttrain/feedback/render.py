"""Turning untrusted text into HTML: campaign guidelines are Markdown, rendered by markdown-it-py with raw HTML
off and then sanitised by nh3 (ammonia). Model outputs are shown as escaped text (Jinja's autoescape); the
rater may switch to a Markdown view of them, rendered the same way but without links (`response_html`)."""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])  # GFM's, as chat models write
_TAGS = {"p", "h1", "h2", "h3", "h4", "ul", "ol", "li", "em", "strong", "code", "pre", "blockquote", "a", "hr",
         "br", "table", "thead", "tbody", "tr", "th", "td", "s", "del"}


def markdown_html(text: str) -> Markup:
    """Safe HTML for Markdown `text`: only the tags above, links without javascript: and with rel=noopener."""
    return Markup(nh3.clean(_md.render(text or ""), tags=_TAGS, url_schemes={"http", "https", "mailto"},
                            link_rel="noopener noreferrer"))


def response_html(text: str) -> Markup:
    """Safe HTML for a model's Markdown output, as `markdown_html` but with links kept as their text only: a
    response is judged, not followed."""
    return Markup(nh3.clean(_md.render(text or ""), tags=_TAGS - {"a"}, url_schemes=set()))
