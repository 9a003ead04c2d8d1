"""What the MkDocs hooks that generate pages share: putting a generated section where ``mkdocs.yml``'s nav names it.

MkDocs puts a hook's folder on ``sys.path`` while it loads the hook, so a hook imports this as ``docs_nav``.
"""

from __future__ import annotations


def replace_nav(nav: list, index: str, section: list, title: str) -> bool:
    """Put ``section`` (the index page, then the generated pages) where ``nav`` names ``index``, keeping the
    entry's title (``title`` where the entry is the bare page); True when found."""
    for position, item in enumerate(nav):
        if isinstance(item, dict):
            ((name, value),) = item.items()
            if value == index:
                nav[position] = {name: section}
                return True
            if isinstance(value, list) and replace_nav(value, index, section, title):
                return True
        elif item == index:
            nav[position] = {title: section}
            return True
    return False
