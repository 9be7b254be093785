"""The console's languages: Chinese (zh-CN) first, English second.

A small dict-based catalog rather than Babel's gettext: the console has a few hundred messages,
each with a stable key (`login.title`), kept as JSON in `locales/` (`zh-CN.json`, `en.json`),
and one folder per part of the console with its own pair (`locales/watchlist/zh-CN.json`), merged
at load; a key defined twice is an error, not a silent override. No build step compiles them, and a test holds the two catalogs to the same keys and placeholders,
so a message missing in one language fails the test suite instead of showing a key.

The language is chosen, in order: `?lang=` on any page (remembered in the session), then the
browser's `Accept-Language`, then zh-CN. Dates and times are shown in China Standard Time, in each
language's usual form; numbers with the locale's grouping.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from importlib import resources

from idguard.core.clock import CST

LANGUAGES = ("zh-CN", "en")
DEFAULT = "zh-CN"


@cache
def catalog(lang: str) -> dict[str, str]:
    locales = resources.files("idguard.console").joinpath("locales")
    messages: dict[str, str] = json.loads(locales.joinpath(f"{lang}.json").read_text("utf-8"))
    parts = sorted((p for p in locales.iterdir() if p.is_dir()), key=lambda p: p.name)
    for part in parts:
        file = part.joinpath(f"{lang}.json")
        if not file.is_file():
            continue
        more: dict[str, str] = json.loads(file.read_text("utf-8"))
        twice = sorted(messages.keys() & more.keys())
        if twice:
            raise ValueError(f"locales/{part.name}/{lang}.json defines {twice} again")
        messages.update(more)
    return messages


def supported(lang: str | None) -> str | None:
    """The supported language `lang` names (`en`, `en-GB`, `zh`, `zh-cn`), or None."""
    if not lang:
        return None
    primary = lang.strip().lower().split("-")[0]
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def negotiate(accept_language: str | None) -> str:
    """The best supported language of an Accept-Language header (q-values honoured)."""
    if not accept_language:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        lang = supported(tag)
        if lang is not None and quality > 0:
            ranked.append((-quality, n, lang))
    return min(ranked)[2] if ranked else DEFAULT


class Translator:
    """`_()` in templates: the message `key` in the page's language, formatted with `values`."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.messages = catalog(lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self.messages.get(key)
        if text is None:
            text = catalog(DEFAULT).get(key, key)
        return text.format(**values) if values else text

    def event(self, value: str) -> str:
        """A ledger event's name; an event this catalog does not know yet shows as stored."""
        key = "event." + value.replace(":", ".")
        return self.messages.get(key) or catalog(DEFAULT).get(key) or value

    def datetime(self, at: dt.datetime | None) -> str:
        if at is None:
            return ""
        local = at.astimezone(CST)
        if self.lang == "zh-CN":
            return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
        return f"{local.day} {local:%b} {local.year}, {local:%H:%M}"

    def date(self, day: dt.date | None) -> str:
        if day is None:
            return ""
        if self.lang == "zh-CN":
            return f"{day.year}年{day.month}月{day.day}日"
        return f"{day.day} {day:%b} {day.year}"

    def number(self, value: int | float) -> str:
        return f"{value:,}"
