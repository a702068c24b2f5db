"""Redaction: mask secrets and personal data in journal payloads and exported telemetry.

    redactor = Redactor(emails=True)
    redactor.redact_text("key sk-proj-abc... for jane@example.com")
    # 'key [REDACTED:openai_key] for [REDACTED:email]'
    redactor.redact({"result": {"api_key": "abc123", "note": "call +1 415 555 0100"}})

Every pattern lives in one compiled regular expression, so a string without anything to mask
costs a single scan. Patterns only start matching at the beginning of a token (a look-behind
guard), which keeps the scan linear even on very long strings without spaces.

Kinds (``[REDACTED:<kind>]``):

* secrets (on by default): ``openai_key``, ``anthropic_key``, ``aws_key``, ``github_token``,
  ``slack_token``, ``stripe_key``, ``google_key``, ``private_key``, ``jwt``, ``bearer`` and
  ``secret`` (the value of ``api_key=...``, ``"password": "..."`` and the like, and any string
  value of a dict key that names a credential);
* ``email``, ``phone`` and ``card`` (card numbers must pass the Luhn check): off by default;
* custom patterns, named by their key in ``patterns``;
* ``extra_literals``: exact strings (a known secret value), masked as ``secret``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.errors import UsageError

__all__ = ["KINDS", "Redactor", "luhn_ok"]

KINDS = ("secrets", "emails", "phones", "cards")
"""The kinds ``TETHER_REDACT`` accepts (plus ``all`` and ``none``)."""

_KIND_ALIASES = {
    "secret": "secrets", "secrets": "secrets",
    "email": "emails", "emails": "emails",
    "phone": "phones", "phones": "phones",
    "card": "cards", "cards": "cards", "credit_cards": "cards",
}  # fmt: skip


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


# Names of keys whose values are credentials, as a dict key or in ``name=value`` text.
_CREDENTIAL_NAME = (
    r"(?:[A-Za-z0-9]+[_-])*"
    r"(?:api[_-]?key|apikey|api[_-]?token|secret(?:[_-]?key)?|client[_-]?secret|"
    r"secret[_-]?access[_-]?key|private[_-]?key|password|passwd|passphrase|pwd|"
    r"token|access[_-]?token|refresh[_-]?token|auth[_-]?token|id[_-]?token|"
    r"session[_-]?token|bearer[_-]?token|authorization|credentials?)"
)
_CREDENTIAL_KEY = re.compile(_CREDENTIAL_NAME, re.IGNORECASE)
_key_verdicts: dict[str, bool] = {}


def _is_credential_key(key: str) -> bool:
    verdict = _key_verdicts.get(key)
    if verdict is None:
        verdict = _CREDENTIAL_KEY.fullmatch(key) is not None
        if len(_key_verdicts) >= 4096:
            _key_verdicts.clear()
        _key_verdicts[key] = verdict
    return verdict


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str
    regex: str
    keep: str | None = None  # a group kept in front of the mask (e.g. ``password=``)
    check: Callable[[str], bool] | None = None  # the match is masked only if this holds


_START = r"(?<![A-Za-z0-9_+/=-])"  # begin only at the start of a token
_END = r"(?![A-Za-z0-9_-])"

_SECRET_PATTERNS = (
    _Pattern("private_key", r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----[\s\S]{1,10000}?"
             r"-----END [A-Z ]{0,40}PRIVATE KEY-----"),  # fmt: skip
    _Pattern("anthropic_key", _START + r"sk-ant-[A-Za-z0-9_-]{20,}" + _END),
    _Pattern("openai_key", _START + r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}"
             + _END),  # fmt: skip
    _Pattern("stripe_key", _START + r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}" + _END),
    _Pattern("aws_key", r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
    _Pattern("github_token", _START + r"(?:gh[pousr]_[A-Za-z0-9]{30,255}|"
             r"github_pat_[A-Za-z0-9_]{22,255})" + _END),  # fmt: skip
    _Pattern("slack_token", _START + r"xox[abposr]-[A-Za-z0-9-]{10,}" + _END),
    _Pattern("google_key", _START + r"AIza[0-9A-Za-z_-]{35}" + _END),
    _Pattern("jwt", _START + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
             + _END),  # fmt: skip
    _Pattern("bearer", r"(?<![A-Za-z0-9_-])(?P<{keep}>[Bb]earer\s+)(?=[A-Za-z._~+/-]{0,300}\d)"
             r"[A-Za-z0-9._~+/-]{8,}=*",
             keep="keep"),  # fmt: skip
    # name=value, name: value, "name": "value" (value up to the closing quote)
    _Pattern(
        "secret",
        r"(?<![A-Za-z0-9_-])(?P<{keep}>(?i:" + _CREDENTIAL_NAME + r")[\"']?\s{0,3}[:=]\s{0,3}"
        r"(?:(?P<{q}>[\"'])(?=[^\"'\n]{3,}(?P={q}))|(?!(?:null|true|false|None)\b)"
        r"(?![-+]?[\d.]+(?:[\s,;&)}\]]|$))(?=[^\s\"'\[{}]{3,})))"
        r"(?:(?:[Bb]earer|[Bb]asic|[Tt]oken)\s+[^\s\"',;]+|(?<=[\"'])[^\"'\n]+"
        r"|[^\s\"',;&)}\]]+)",
        keep="keep",
    ),
)

_EMAIL = _Pattern(
    "email",
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])",
)
_CARD = _Pattern(
    "card",
    r"(?<![\w.+-])(?:\d{13,19}|\d{4}(?P<{s1}>[ -])\d{4}(?P={s1})\d{4}(?P={s1})\d{1,7}|"
    r"\d{4}(?P<{s2}>[ -])\d{6}(?P={s2})\d{4,5})(?![\w-])",
    check=_card_ok,
)
_PHONE = _Pattern(
    "phone",
    r"(?<![\w.+-])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"  # +44 20 7946 0958
    r"|(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # (415) 555-0100, 415-555-0100
    r")(?![\w-])",
)


class Redactor:
    """Masks secrets and configured personal data in strings and JSON-like values.

    Args:
        patterns: extra kinds to mask, ``{name: regex}``; a match becomes ``[REDACTED:name]``.
        secrets: mask API keys, tokens, JWTs, private keys and credential values (default on).
        emails: mask email addresses.
        phones: mask phone numbers written with a country code or separators (a bare run of
            digits, like a product id, is never taken for a phone number).
        cards: mask card numbers (13-19 digits, optionally grouped) that pass the Luhn check.
        extra_literals: exact strings to mask wherever they appear (as ``secret``).
    """

    __slots__ = ("_keep", "_kinds", "_min_len", "_regex", "_secret_keys", "_checks", "kinds")

    def __init__(
        self,
        patterns: Mapping[str, str] | None = None,
        *,
        secrets: bool = True,
        emails: bool = False,
        phones: bool = False,
        cards: bool = False,
        extra_literals: Iterable[str] = (),
    ) -> None:
        chosen: list[_Pattern] = []
        if secrets:
            chosen.extend(_SECRET_PATTERNS)
        literals = sorted({s for s in extra_literals if s}, key=len, reverse=True)
        if literals:
            chosen.append(_Pattern("secret", "|".join(re.escape(s) for s in literals)))
        if emails:
            chosen.append(_EMAIL)
        if cards:
            chosen.append(_CARD)
        if phones:
            chosen.append(_PHONE)
        for name, regex in (patterns or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise UsageError(f"redaction pattern name {name!r}: use letters, digits, _ . -")
            try:
                re.compile(regex)
            except re.error as exc:
                raise UsageError(f"redaction pattern {name!r} is not a valid regex: {exc}") from exc
            chosen.append(_Pattern(name, regex))
        self._secret_keys = secrets
        self.kinds: tuple[str, ...] = tuple(dict.fromkeys(p.kind for p in chosen))
        """The kinds this redactor masks, in the order they are tried."""
        self._kinds: dict[str, str] = {}
        self._keep: dict[str, str] = {}
        self._checks: dict[str, Callable[[str], bool]] = {}
        parts: list[str] = []
        for i, p in enumerate(chosen):
            group = f"_t{i}"
            regex = p.regex.replace("{keep}", f"{group}k").replace("{q}", f"{group}q")
            regex = regex.replace("{s1}", f"{group}a").replace("{s2}", f"{group}b")
            parts.append(f"(?P<{group}>{regex})")
            self._kinds[group] = p.kind
            if p.keep is not None:
                self._keep[group] = f"{group}k"
            if p.check is not None:
                self._checks[group] = p.check
        self._regex: re.Pattern[str] | None = re.compile("|".join(parts)) if parts else None
        self._min_len = min([6, *(len(s) for s in literals)])

    # -- construction from the environment ----------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """A redactor configured by ``TETHER_REDACT`` and ``TETHER_REDACT_PATTERNS``.

        ``TETHER_REDACT`` is a comma list of ``secrets``, ``emails``, ``phones``, ``cards``
        (or ``all``, or ``none``); unset means ``secrets``. ``TETHER_REDACT_PATTERNS`` is a JSON
        object of extra ``{"name": "regex"}`` kinds.
        """
        env = os.environ if environ is None else environ
        raw = env.get("TETHER_REDACT")
        enabled: set[str] = {"secrets"}
        if raw is not None and raw.strip():
            enabled = set()
            for item in raw.split(","):
                word = item.strip().lower()
                if not word:
                    continue
                if word == "all":
                    enabled.update(KINDS)
                elif word in ("none", "off"):
                    enabled.clear()
                elif word in _KIND_ALIASES:
                    enabled.add(_KIND_ALIASES[word])
                else:
                    raise UsageError(f"TETHER_REDACT: unknown kind {word!r}; use a comma list "
                                     f"of {', '.join(KINDS)}, or all, or none")  # fmt: skip
        patterns: dict[str, str] = {}
        text = env.get("TETHER_REDACT_PATTERNS", "").strip()
        if text:
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise UsageError(f"TETHER_REDACT_PATTERNS is not valid JSON: {exc}") from exc
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise UsageError('TETHER_REDACT_PATTERNS must be a JSON object {"name": "regex"}')
            patterns = value
        return cls(
            patterns,
            secrets="secrets" in enabled,
            emails="emails" in enabled,
            phones="phones" in enabled,
            cards="cards" in enabled,
        )

    # -- redaction ----------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return self._regex is not None or self._secret_keys

    def __repr__(self) -> str:
        return f"Redactor(kinds={list(self.kinds)!r})"

    def _replace(self, m: re.Match[str]) -> str:
        group = m.lastgroup or ""
        check = self._checks.get(group)
        if check is not None and not check(m.group(group)):
            return m.group(0)
        mask = f"[REDACTED:{self._kinds[group]}]"
        keep = self._keep.get(group)
        if keep is not None:
            return (m.group(keep) or "") + mask
        return mask

    def redact_text(self, text: str) -> str:
        """``text`` with every match masked; the same string when nothing matches."""
        if self._regex is None or len(text) < self._min_len:
            return text
        return self._regex.sub(self._replace, text)

    def redact(self, value: Any) -> Any:
        """A redacted copy of a JSON-like value (str, dict, list, tuple; other values as is).

        Dicts and lists are rebuilt (the input is never mutated); keys are kept. With secrets on,
        a string or number stored under a key that names a credential (``password``, ``api_key``,
        ``authorization``, ``client_secret``...) is masked whole.
        """
        t = type(value)
        if t is str:
            return self.redact_text(value)
        if t is dict or isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            secret_keys = self._secret_keys
            for k, v in value.items():
                if (
                    secret_keys
                    and type(k) is str
                    and type(v) in (str, int, float)
                    and v != ""
                    and _is_credential_key(k)
                ):
                    out[k] = "[REDACTED:secret]"
                else:
                    out[k] = self.redact(v)
            return out
        if t is list:
            return [self.redact(v) for v in value]
        if t is tuple:
            return tuple(self.redact(v) for v in value)
        return value
