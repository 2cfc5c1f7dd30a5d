"""Every console string is in the message catalogue, in all three languages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shopfloor.ui.i18n import DEFAULT, LANGUAGES, catalogue, t

UI = Path(__file__).resolve().parents[2] / "src" / "shopfloor" / "ui"
# t("key") / t('key') with a literal key
LITERAL = re.compile(r"""\bt\(\s*["']([a-z0-9_]+\.[a-z0-9_.]+)["']""")
# keys built at run time from a known family: t(f"alarm_state.{s}") and the like
FAMILIES = {
    "alarm_state.": (
        "unack_active",
        "ack_active",
        "unack_rtn",
        "normal",
        "shelved",
        "suppressed_by_design",
        "out_of_service",
    ),
    "alarms.done_": ("ack", "shelve", "unshelve"),
    "alarms.*_title": ("ack", "shelve"),
    "nav.": ("tree", "alarms", "apps", "rules", "audit", "dashboards", "gateways"),
    "state.": ("off", "idle", "running", "blocked", "down", "changeover", "unknown"),
    "alarms.p": ("1", "2", "3", "4"),
}


def used_keys() -> set[str]:
    keys: set[str] = set()
    for path in UI.rglob("*.py"):
        if path.name != "i18n.py":  # its docstring's examples are not the console's
            keys |= set(LITERAL.findall(path.read_text()))
    for family, members in FAMILIES.items():
        for m in members:
            keys.add(family.replace("*", m) if "*" in family else family + m)
    return keys


def test_the_scan_finds_the_keys() -> None:
    keys = used_keys()
    assert len(keys) > 60  # the scan itself works
    assert "login.submit" in keys


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_used_key_is_in_every_language(lang: str) -> None:
    missing = sorted(used_keys() - set(catalogue(lang)))
    assert not missing, f"{lang} lacks {missing}"


def test_the_languages_have_the_same_keys_and_placeholders() -> None:
    base = catalogue(DEFAULT)
    placeholder = re.compile(r"\{(\w+)\}")
    for lang in LANGUAGES:
        other = catalogue(lang)
        assert set(other) == set(base), lang
        for key, text in base.items():
            assert set(placeholder.findall(other[key])) == set(placeholder.findall(text)), key
            assert other[key].strip(), (lang, key)


def test_t_formats_and_falls_back() -> None:
    assert t("alarms.done_ack", "de", rule="hot", device="press-01") == "hot an press-01 quittiert"
    assert t("login.submit", "zh") == "登录"
    assert t("no.such.key", "de") == "no.such.key"
