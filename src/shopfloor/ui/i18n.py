"""The console's message catalogue: English, German, Simplified Chinese.

``t("alarms.ack")`` looks the key up in the current user's language (stored with the user's
browser session), falling back to English; ``t("tree.signals", n=3)`` formats. The catalogues
are ``messages/<lang>/*.json``, one file per part of the console (the pages of one feature
keep their strings together), merged; a key defined twice is an error. A test fails when a
key used in the code is missing from any language, or when the languages differ in their
keys.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Final

__all__ = ["DEFAULT", "LANGUAGES", "catalogue", "current_language", "t"]

LANGUAGES: Final = {"en": "English", "de": "Deutsch", "zh": "简体中文"}
DEFAULT: Final = "en"
_DIR: Final = Path(__file__).with_name("messages")


@cache
def catalogue(lang: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted((_DIR / lang).glob("*.json")):
        part = json.loads(path.read_text(encoding="utf-8"))
        twice = sorted(set(part) & set(merged))
        if twice:
            raise ValueError(f"{path}: keys defined in another file too: {twice}")
        merged.update(part)
    return merged


def current_language() -> str:
    try:
        from nicegui import app

        lang = str(app.storage.user.get("lang", DEFAULT))
    except (ImportError, RuntimeError, AssertionError):  # outside a page (tests, startup)
        lang = DEFAULT
    return lang if lang in LANGUAGES else DEFAULT


def t(key: str, lang: str | None = None, **values: Any) -> str:
    """The text of ``key`` in ``lang`` (default: the user's), formatted with ``values``."""
    text = catalogue(lang or current_language()).get(key) or catalogue(DEFAULT).get(key) or key
    return text.format(**values) if values else text
