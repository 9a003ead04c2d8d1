"""MkDocs hook: a notebook page (the tutorial, rendered by mkdocs-jupyter) loads nothing from elsewhere.

nbconvert's lab template, which mkdocs-jupyter renders notebooks with, adds a MathJax loader (an empty
``<script src="">`` once ``custom_mathjax_url`` is blank, and its configuration) and a Mermaid loader that
imports its library from a CDN when a cell holds a diagram. The notebooks here have neither maths nor
diagrams, so both go, and the page opens offline; any other script on a notebook page that names an address
off the machine fails the build, naming it.
"""

from __future__ import annotations

import re

from mkdocs.exceptions import PluginError

MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S)
REMOTE = re.compile(r"(?:https?:)?//[\w-]+(?:\.[\w-]+)+/[^\s\"'`<>)]*")


def strip_loaders(html: str) -> str:
    """``html`` without the MathJax loader and the Mermaid module script."""
    html = MATHJAX.sub("", html)
    return SCRIPT.sub(lambda m: "" if 'type="module"' in m.group(1) and "mermaid" in m.group(2) else m.group(0), html)


def remote_scripts(html: str) -> list[str]:
    """Every address off the machine that a script of ``html`` loads or names (its ``src`` or its body)."""
    return [address for attributes, body in SCRIPT.findall(html) for address in REMOTE.findall(attributes + " " + body)]


def on_page_content(html, page, **kwargs):
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    html = strip_loaders(html)
    if found := remote_scripts(html):
        raise PluginError(f"{page.file.src_uri}: a script on the page loads {found[0]} (the site must open offline)")
    return html
