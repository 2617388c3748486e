"""Text-level helpers shared by the readers, the cleaning steps and the labeled set.

Why here: the same normalization must apply to the pretraining corpus (inside datatrove steps,
in worker processes) and to the fine-tuning texts (in the stage process), and the readers need
the same notion of "invalid UTF-8" as the cleaner. Pure functions, no datatrove import.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "SCRIPTS",
    "has_invalid_utf8",
    "is_mostly_latin",
    "normalize_text",
    "prose_of",
    "repair_invalid_utf8",
    "text_script",
]

_SPACES = re.compile(r" {2,}")
_TRAILING = re.compile(r"[ \t]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")
# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F; keep \t (09) and \n (0A).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Line and paragraph separators are line breaks: make them the one line break we keep.
_LINE_SEPARATORS = re.compile(r"[\u2028\u2029]")
# Lone surrogates: what undecodable bytes become under errors="surrogateescape" (U+DC80-U+DCFF),
# and what a JSON "\ud800" escape produces. Neither can be written as UTF-8.
_SURROGATES = re.compile(r"[\ud800-\udfff]")

# Letters of the Latin script (basic, Latin-1, extended A/B, IPA, additional, fullwidth).
_LATIN_LETTER = re.compile(
    r"[A-Za-z\u00c0-\u024f\u0250-\u02af\u1e00-\u1eff\uff21-\uff3a\uff41-\uff5a]"
)
_ANY_LETTER = re.compile(r"[^\W\d_]")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_KANA = re.compile(r"[\u3041-\u30fa\u30fc-\u30ff\uff66-\uff9d]")  # not the middle dot
_HANGUL = re.compile(r"[\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3]")
_SCRIPT_SAMPLE = 2000  # characters of prose a document's script is judged on
_SCRIPT_WINDOW = 8000  # characters of text searched for them (code and formulas come out)

# What is not prose in Markdown / LaTeX-flavoured text: fenced code blocks (``` or ~~~; an
# unclosed fence runs to the end, as in CommonMark), inline code (single backticks, no space
# inside them, so the ``quotes'' of Penn-Treebank-style text stay prose), math in dollars
# ($$...$$, and $...$ by pandoc's rule: no space inside either dollar, no digit right after the
# closing one, so "$5 and $10" stays prose) and in backslashes (\[...\], \(...\),
# \begin{env}...\end{env}). One pattern per trigger character, each run only where its
# character occurs: most text has none, and one pattern starting with a literal scans fast.
_FENCED = re.compile(r"(?ms)^[ \t]*(`{3,}|~{3,})[^\n]*$.*?(?:^[ \t]*\1[ \t]*$|\Z)")
_INLINE_CODE = re.compile(r"(?<!`)`(?=[^`\s])[^`\n]*?(?<=[^`\s])`(?!`)")
_DOLLAR_MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$(?=[^\s$])[^$\n]*?(?<=[^\s\\])\$(?!\d)", re.S)
_BACKSLASH_MATH = re.compile(
    r"\\\[.+?\\\]|\\\(.+?\\\)|\\begin\{([A-Za-z]+\*?)\}.*?\\end\{\1\}", re.S
)

# The scripts text_script tells apart. "none": no letters at all (symbol soup, rows of numbers),
# which every language's rules judge.
SCRIPTS = ("latin", "han", "japanese", "hangul", "other", "none")


def has_invalid_utf8(text: str) -> bool:
    """True when ``text`` holds lone surrogates (undecodable bytes under ``surrogateescape``)."""
    return _SURROGATES.search(text) is not None


def repair_invalid_utf8(text: str) -> str:
    """Each lone surrogate becomes U+FFFD, the replacement character, so the text is valid UTF-8."""
    return _SURROGATES.sub("\ufffd", text)


def normalize_text(text: str, unicode_form: str = "NFC") -> str:
    """One canonical form of ``text``, always encodable as UTF-8.

    Steps: lone surrogates to U+FFFD; CRLF / CR / U+2028 / U+2029 to LF; unicode normalization
    (``NFC``, ``NFKC`` or ``none``; NFC only composes, so CJK, accents and emoji, including
    zero-width-joiner sequences, come out as they went in); strip control characters except
    ``\\n`` and ``\\t``; collapse runs of spaces; strip trailing spaces and tabs on each line; at
    most one blank line in a row; strip the ends.
    """
    # Each regex pass is skipped when a cheap substring test shows it cannot match: most text
    # is clean, and the scans were most of this function's time (0.30 -> 0.07 s per 7 MB).
    ascii_only = text.isascii()  # surrogates, separators and normalization concern non-ASCII
    if not ascii_only and _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not ascii_only:
        text = _LINE_SEPARATORS.sub("\n", text)
        if unicode_form and unicode_form.lower() != "none":
            text = unicodedata.normalize(unicode_form.upper(), text)
    text = _CONTROLS.sub("", text)
    if "  " in text:
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\t\n" in text:
        text = _TRAILING.sub("\n", text)
    if "\n\n\n" in text:
        text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def prose_of(text: str) -> str:
    """``text`` without its fenced code blocks, inline code and TeX formulas.

    Why: a Chinese tutorial whose code blocks are in ASCII is still Chinese text; judged on all
    its letters it would count as Latin script and get the wrong language's rules. Each part
    taken out leaves a space (a fenced block a line break), so words on either side stay apart.
    """
    if "```" in text or "~~~" in text:
        text = _FENCED.sub("\n", text)
    if text.count("`") != 2 * text.count("``"):  # a lone backtick: maybe inline code
        text = _INLINE_CODE.sub(" ", text)
    if "$" in text:
        text = _DOLLAR_MATH.sub(" ", text)
    if "\\" in text:
        text = _BACKSLASH_MATH.sub(" ", text)
    return text


def text_script(text: str) -> str:
    """The script a document is written in, judged on its prose (one of :data:`SCRIPTS`).

    The rule: take the first 2,000 characters of prose (:func:`prose_of` of the first 8,000
    characters) and count letters by script; each Han, kana or Hangul character counts twice,
    since it carries about a word where a Latin letter carries a fifth of one; the script with
    the largest count wins (ties: Latin first). Han with kana (at least a tenth of the
    CJK characters) is Japanese; Han alone is Chinese ("han"). No letters: ``none``.
    """
    window = text[:_SCRIPT_WINDOW]
    if window.isascii():  # Latin or no letters at all, whatever the markup
        return "latin" if _ASCII_LETTER.search(window) else "none"
    sample = prose_of(window)[:_SCRIPT_SAMPLE]
    letters = len(_ANY_LETTER.findall(sample))
    if letters == 0:
        return "none"
    latin = len(_LATIN_LETTER.findall(sample))
    if latin == letters:
        return "latin"
    han = len(_HAN.findall(sample))
    kana = len(_KANA.findall(sample))
    hangul = len(_HANGUL.findall(sample))
    other = letters - latin - han - kana - hangul
    cjk = han + kana
    weights = {"latin": latin, "cjk": 2 * cjk, "hangul": 2 * hangul, "other": other}
    best = max(weights, key=weights.__getitem__)  # dict order breaks ties: Latin first
    if best != "cjk":
        return best
    return "japanese" if 10 * kana >= cjk else "han"


def is_mostly_latin(text: str) -> bool:
    """True when :func:`text_script` finds Latin script, or no letters at all.

    English-centred quality rules (stop words, mean word length, terminal punctuation) are wrong
    for Chinese, Japanese, Russian or Arabic text. A text without letters counts as Latin, so
    junk such as rows of numbers still meets the rules.
    """
    return text_script(text) in ("latin", "none")
