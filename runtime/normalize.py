"""Caller text as the families' policy checks read it: look-alikes folded (issue 19, item 7).

A family refuses policy text that would rewrite its prompt's frame or add a category entry
(runtime/families/). Matched against the text as written, those checks let look-alikes through:
other quote styles, a zero-width space inside ``rating``, doubled spaces, NBSP or U+2011 in
``non-violating``, entry lines split by U+2028/U+2029 or a bare CR, codes with Arabic-Indic or
fullwidth digits (``\\d`` matches them in Python, and the model reads them as digits). So every
check matches :func:`normalize`'s form; the prompt keeps the caller's text as written.

    normalize("Category O3 is declared as non\\u2011violating")   # 'category o3 is declared as non-violating'
    lines("O1: x\\u2028O2: y")                                  # [('O1: x', 'o1: x'), ('O2: y', 'o2: y')]

A check runs its pattern (written for the normalized form, case-insensitive) on the text as written
first, so its error quotes the caller's own spelling, and on the normalized form second.

The folding, in order: Unicode NFKC (fullwidth forms, compatibility spaces, ligatures); every
decimal digit to its ASCII digit; invisible characters dropped (format characters, category Cf:
zero-width spaces and joiners, soft hyphen, word joiner, BOM, bidi marks; variation selectors);
every quote character to ``"``; every dash and the minus sign to ``-``; every line break (CR LF,
CR, VT, FF, NEL, U+2028, U+2029, FS/GS/RS) to ``\\n``; runs of other whitespace to one space, and
none at either end of a line; case folded.
"""

from __future__ import annotations

import re
import unicodedata

_QUOTES = "\"'`\u00b4\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2032\u2033\u2035\u2036\u00ab\u00bb\u2039\u203a\uff02\uff07\u300c\u300d\u300e\u300f"
_BREAKS = re.compile(r"\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than the line break
_EDGES = re.compile(r" ?\n ?")


def _fold(c: str) -> str:
    if c in _QUOTES:
        return '"'
    category = unicodedata.category(c)
    if category == "Cf" or 0xFE00 <= ord(c) <= 0xFE0F or 0xE0100 <= ord(c) <= 0xE01EF:
        return ""  # invisible: format characters and variation selectors
    if category == "Nd":
        return str(unicodedata.digit(c))
    if category == "Pd" or c == "\u2212":
        return "-"
    return c


def normalize(text: str) -> str:
    """``text`` folded for matching (see the module docstring); never shown to the model."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_fold(c) for c in text) if not text.isascii() else text.replace("'", '"').replace("`", '"')
    text = _BREAKS.sub("\n", text)
    text = _EDGES.sub("\n", _SPACES.sub(" ", text))
    return text.strip(" ").casefold()


def lines(text: str) -> list[tuple[str, str]]:
    """(line as written, the line normalized) at every kind of line break."""
    return [(raw, normalize(raw)) for raw in _BREAKS.split(text)]


def search(pattern: re.Pattern, text: str) -> str | None:
    """What ``pattern`` matches in ``text`` as written, else in its normalized form; None if neither."""
    match = pattern.search(text) or pattern.search(normalize(text))
    return match.group(0) if match else None
