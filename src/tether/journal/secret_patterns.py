"""The patterns :class:`~tether.journal.redaction.Redactor` masks, and what it looks for first.

Each pattern names the literal substrings a text must contain for it to match (``sk-``, ``AKIA``,
``://``...), and may add a gate: a cheap regular expression the text must then contain as well.
Both only ever over-approximate the pattern (a text the pattern matches always contains one of
the literals, and always matches the gate), so skipping a text that lacks them changes nothing.
The same literals and gates, applied to compact JSON text, tell the engine that a payload needs
no walk at all (:meth:`Redactor.json_may_change`).

Token-shaped secrets start only at the start of a token (not inside a word, after a letter,
digit, ``_`` or ``-``), which keeps the scan linear on long strings without spaces and keeps
words such as ``task-sk-list`` apart from keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["luhn_ok"]


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum (card numbers do)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_ok(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits)


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str
    regex: str  # ``{g}`` is replaced by a prefix unique to this pattern, for its own groups
    needs: tuple[str, ...] | None = None  # the text contains one of these, or cannot match
    needs_lower: tuple[str, ...] | None = None  # the same, tested on the lowercased text
    # a regex the text (with needs_lower: the lowercased text) must then contain; it must also
    # be found in the JSON text of any value holding a string the pattern matches
    gate: str | None = None
    keep: bool = False  # the group ``{g}k`` is kept in front of the mask (``password=``)
    check: Callable[[str], bool] | None = None  # a match is masked only if this holds
    markers: tuple[tuple[str, str], ...] = ()  # (group suffix, kind) for patterns of two kinds


# Names whose values are credentials: a dict key, or the name in ``name=value`` text. A name may
# carry prefixes (``OPENAI_API_KEY``, ``x-api-key``, ``aws_secret_access_key``). Letters are
# matched ASCII-only (Unicode case folding would let ``K`` (Kelvin) stand for ``k``, which
# lowercasing, and so the literal prefilter, does not do).
_CREDENTIAL_WORDS = (
    r"(?:api[_-]?key|apikey|api[_-]?token|secret(?:[_-]?key)?|client[_-]?secret|"
    r"secret[_-]?access[_-]?key|private[_-]?key|password|passwd|passphrase|pwd|"
    r"token|accesstoken|authtoken|authorization|credentials?)"
)
_CREDENTIAL_NAME = r"(?:[A-Za-z0-9]+[_-])*" + _CREDENTIAL_WORDS
_CREDENTIAL_KEY = re.compile(_CREDENTIAL_NAME, re.IGNORECASE | re.ASCII)
# The credential gate of the ``secret`` kind as it can appear in JSON text (lowercased), one regex
# per literal it needs: the literal, what may follow it to the end of a credential word, then the
# separator (a quote may be escaped, and whitespace may be written as an escape).
_JSON_SEPARATOR = r"(?:\\?[\"'])?(?:\s|\\[nrtfb]|\\u[0-9a-f]{4}){0,3}[:=]"
_JSON_WORD_ENDS = {
    "key": "",
    "secret": r"(?:[_-]?key)?",
    "pass": r"(?:word|wd|phrase)",
    "pwd": "",
    "token": "",
    "auth": r"(?:orization|token)",
    "credential": "s?",
}
# what must come before a credential word for it to end a credential name: ``key`` ends one
# only as ``api_key``, ``secret_key``, ``secret_access_key`` or ``private_key`` (with ``-`` or
# nothing for ``_``), so ``idempotency_key`` needs no look
_JSON_WORD_LEADS = {"key": r"(?:api|secret|access|private)[_-]?"}
# a longer word each credential word may begin, which is then no credential: when every
# occurrence of the word is the start of this one, its gate cannot match (``input_tokens``)
_JSON_HARMLESS = {"token": "tokens"}
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')  # characters JSON writes escaped

_TOKEN = "A-Za-z0-9_-"  # characters that continue a token (a match never starts inside one)
_END = r"(?![A-Za-z0-9_-])"
# a token also starts after an escaped newline, tab... of JSON text held in a string (``\\nsk-``)
_ESCAPE = r"\\[nrtbf]"


def _after_token(what: str, token: str = _TOKEN) -> str:
    """A guard placed after ``what`` (a regex of fixed width): it starts a token."""
    return f"(?:(?<![{token}]{what})|(?<={_ESCAPE}{what}))"


def _lead(literal: str) -> str:
    """``literal`` at the start of a token (the guard comes after it, so the regex engine can
    search for the literal directly)."""
    return re.escape(literal) + _after_token(re.escape(literal))


# 40 characters of base64 standing alone, in both cases: an AWS secret access key
_AWS_SECRET = (
    r"(?:(?<![A-Za-z0-9/+_-])|(?<=" + _ESCAPE + r"))"
    r"(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
    r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_-])"
)
_AWS_SECRET_GATE = r"[A-Za-z0-9/+]{40}"
_SECRET_WORD = r"(?:secret|Secret|SECRET)"

# the prefixes of GitLab's tokens (personal, OAuth application, deploy, runner, CI job, trigger,
# feed, incoming mail, agent, SCIM, feature flags, workspace)
_GITLAB = (
    "pat",
    "oas",
    "dt",
    "rt",
    "rtr",
    "cbt",
    "ptt",
    "ft",
    "imt",
    "agent",
    "soat",
    "ffct",
    "wt",
)
# the characters of a URL's user and password (``@`` separates them from the host)
_URL_USER = r"[^\s:/?#@\"'<>]"
_URL_PASSWORD = r"[^\s/?#@\"'<>]"

_SECRET_PATTERNS = (
    _Pattern(
        "private_key",
        r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----[\s\S]{1,10000}?"
        r"-----END [A-Z ]{0,40}PRIVATE KEY-----",
        needs=("PRIVATE KEY",),
    ),
    _Pattern("anthropic_key", _lead("sk-ant-") + r"[A-Za-z0-9_-]{20,}" + _END, needs=("sk-",)),
    _Pattern(
        "openai_key",
        _lead("sk-") + r"(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}" + _END,
        needs=("sk-",),
    ),
    _Pattern(
        "stripe_key",
        r"[spr]k_(?:live|test)_" + _after_token(".k_(?:live|test)_") + r"[A-Za-z0-9]{16,}" + _END,
        needs=("k_live_", "k_test_"),
    ),
    _Pattern(
        "aws_key", r"A(?:KIA|SIA)(?<![A-Z0-9]A...)[A-Z0-9]{16}(?![A-Z0-9])", needs=("AKIA", "ASIA")
    ),
    _Pattern(
        "github_token",
        _lead("g") + r"(?:h[pousr]_[A-Za-z0-9]{30,255}|ithub_pat_[A-Za-z0-9_]{22,255})" + _END,
        needs=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    # routable tokens end in ``.<version>.<checksum>``
    _Pattern(
        "gitlab_token",
        r"(?:gl"
        + _after_token("gl")
        + "(?:"
        + "|".join(_GITLAB)
        + r")-|"
        + _lead("GR1348941")
        + r")[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9]{2,12}){0,2}"
        + _END,
        needs=(*(f"gl{p}-" for p in _GITLAB), "GR1348941"),
    ),
    _Pattern(
        "slack_token",
        r"(?:" + _lead("xox") + r"[abposre]|" + _lead("xapp") + r")-[A-Za-z0-9-]{10,}" + _END,
        needs=("xox", "xapp-"),
    ),
    _Pattern(
        "slack_webhook",
        r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]{16,}",
        needs=("hooks.slack.com/",),
    ),
    # looked for as ``Iza``: an ``A`` may end an AWS key id found first
    _Pattern("google_key", _lead("AIza") + r"[0-9A-Za-z_-]{35}" + _END, needs=("Iza",)),
    _Pattern(
        "huggingface_token",
        _lead("hf_") + r"(?=[A-Za-z0-9]{0,40}[A-Z])[A-Za-z0-9]{30,}(?![A-Za-z0-9])",
        needs=("hf_",),
    ),
    _Pattern(
        "sendgrid_key",
        _lead("SG.") + r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{30,}" + _END,
        needs=("SG.",),
    ),
    _Pattern(
        "jwt",
        _lead("eyJ") + r"[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}" + _END,
        needs=("eyJ",),
    ),
    # scheme://user:password@host: the password (the user and the host stay readable)
    _Pattern(
        "url_password",
        r"(?<=[A-Za-z0-9])(?P<{g}k>://" + _URL_USER + r"{0,256}:)" + _URL_PASSWORD + r"{1,256}"
        r"(?:@" + _URL_PASSWORD + r"{1,256}){0,8}(?=@[^\s@/?#\"'<>])",
        needs=("://",),
        gate=r"://" + _URL_USER + r"*:[^\s/?#\"'<>]*@",
        keep=True,
    ),
    _Pattern(
        "bearer",
        r"(?P<{g}k>[Bb]earer"
        + _after_token(".earer")
        + r"\s+)(?=[A-Za-z._~+/-]{0,300}\d)[A-Za-z0-9._~+/-]{8,}=*",
        needs=("earer",),
        keep=True,
    ),
    # name=value, name: value, "name": "value" (a quoted value runs to its closing quote)
    _Pattern(
        "secret",
        r"(?:(?<![A-Za-z0-9_-])|(?<=" + _ESCAPE + r"))"
        r"(?P<{g}k>(?ai:" + _CREDENTIAL_NAME + r")[\"']?\s{0,3}[:=]\s{0,3}"
        r"(?:(?P<{g}q>[\"'])(?=[^\"'\n]{3,}(?P={g}q))"
        r"|(?!(?:null|true|false|None)(?:[\s,;&)}\]\"']|$))"
        # a value that is itself ``name=``: that assignment is masked on its own
        r"(?!(?ai:" + _CREDENTIAL_NAME + r")[\"']?\s{0,3}[:=])"
        r"(?![-+]?[\d.]+(?:[\s,;&)}\]]|$))(?=[^\s\"'\[{}]{3,})))"
        # a value stops before a PEM block's header, which ``private_key`` masks whole
        r"(?:(?:[Bb]earer|[Bb]asic|[Tt]oken)\s+[^\s\"',;]+|(?<=[\"'])(?:(?!-----BEGIN )[^\"'\n])+"
        r"|(?:(?!-----BEGIN )[^\s\"',;&)}\]])+)",
        needs_lower=("key", "secret", "pass", "pwd", "token", "auth", "credential"),
        gate=_CREDENTIAL_WORDS + r"[\"']?\s{0,3}[:=]",
        keep=True,
    ),
    # an AWS secret access key in prose ("the secret access key is ...", "AWS secret ..."), or
    # within a few words after a key id or any other secret (masked by then: masking repeats
    # until nothing changes)
    _Pattern(
        "aws_secret",
        r"(?P<{g}k>(?:(?:aws|AWS|Aws)[ _-]?"
        + _SECRET_WORD
        + "|"
        + _SECRET_WORD
        + r"[ _-]?(?:(?:access|Access|ACCESS)[ _-]?)?(?:key|Key|KEY)"
        + r"|\[REDACTED:[A-Za-z0-9_.-]+\])[^\n]{0,40}?)"
        + _AWS_SECRET,
        needs=("ecret", "ECRET", "[REDACTED"),
        gate=_AWS_SECRET_GATE,
        keep=True,
    ),
)

_EMAIL = _Pattern(
    "email",
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])",
    needs=("@",),
)


def _numbers(cards: bool, phones: bool) -> _Pattern:
    """Card and phone numbers as one pattern that starts with a digit, ``+`` or ``(`` (so the
    regex engine skips everything else quickly)."""
    after_plus = r"(?<=\+)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
    after_paren = r"(?<=\()\d{3}\)[ ]?\d{3}[ .-]\d{4}"  # (415) 555-0100
    card = (
        r"(?<=\d)(?:\d{12,18}|\d{3}(?P<{g}a>[ -])\d{4}(?P={g}a)\d{4}(?P={g}a)\d{1,7}|"
        r"\d{3}(?P<{g}b>[ -])\d{6}(?P={g}b)\d{4,5})"
    )
    local = r"(?<=\d)\d{2}[ .-]\d{3}[ .-]\d{4}"  # 415-555-0100, 415 555 0100
    alternatives = []
    if cards:
        alternatives.append(card + "(?P<{g}_c>)")
    if phones:
        alternatives += [
            local + "(?P<{g}_p>)",
            after_plus + "(?P<{g}_q>)",
            after_paren + "(?P<{g}_r>)",
        ]
    first = r"[\d(+]" if phones else r"\d"
    body = first + r"(?<![\w.+-][\d(+])(?:" + "|".join(alternatives) + r")(?![\w-])"
    markers = (("_c", "card"), ("_p", "phone"), ("_q", "phone"), ("_r", "phone"))
    return _Pattern(
        "card" if cards else "phone", body, check=_card_ok if cards else None, markers=markers
    )
