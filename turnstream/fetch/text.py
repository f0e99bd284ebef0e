"""A fetched page as text a model reads well: HTML as Markdown, anything else as it came.

Markdown keeps what matters to a reader (headings, lists, links, tables, code) at a
fraction of the HTML's length; markdownify does the conversion on BeautifulSoup's tree.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup
from markdownify import ATX, MarkdownConverter

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Elements whose content is code, styling or another document, not the page's text.
_DROPPED = ["script", "style", "noscript", "iframe", "svg", "template"]
_BLANK_RUN = re.compile(r"\n(?:[ \t]*\n){2,}")  # two or more blank lines


def readable(media_type: str, text: str) -> str:
    """The text to show the model: HTML as Markdown; JSON, plain text and the rest unchanged."""
    if media_type not in HTML_TYPES:
        return text
    soup = BeautifulSoup(text, "html.parser")
    for element in soup.find_all(_DROPPED):
        element.decompose()
    markdown = MarkdownConverter(heading_style=ATX).convert_soup(soup)
    return _BLANK_RUN.sub("\n\n", markdown).strip()
