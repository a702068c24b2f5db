"""Redaction: mask secrets and personal data in journal payloads and exported telemetry.

    redactor = Redactor(emails=True)
    redactor.redact_text("key sk-proj-... for jane@example.com")
    # 'key [REDACTED:openai_key] for [REDACTED:email]'
    redactor.redact({"result": {"api_key": "abc123", "note": "call +1 415 555 0100"}})

Kinds (a match becomes ``[REDACTED:<kind>]``):

* secrets (on by default): ``openai_key``, ``anthropic_key``, ``aws_key``, ``github_token``,
  ``slack_token``, ``stripe_key``, ``google_key``, ``private_key``, ``jwt``, ``bearer`` (the
  token after ``Bearer``) and ``secret``: the value in ``api_key=...``, ``"password": "..."``,
  ``Authorization: ...`` and the like, and any string or number stored in a dict under a key
  that names a credential;
* ``email``, ``phone`` (with a country code or separators: a bare run of digits such as a product
  id is never a phone number) and ``card`` (13-19 digits passing the Luhn check): off by default;
* custom kinds, ``patterns={"name": regex}``;
* ``extra_literals``: exact strings to mask anywhere (known secret values), as ``secret``.

Speed: the engine redacts every event payload, and almost none contain anything to mask. So each
kind names literal substrings it cannot match without (``sk-``, ``@``, ``AKIA``...); a string is
scanned for those first (C-speed substring tests) and only the kinds that could match run, as one
combined regular expression (compiled once per combination). Short strings, which repeat a lot
(tool names, statuses), are remembered. Patterns begin matching only at the start of a token, so
the scan stays linear even on long strings without spaces.
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
"""The kinds ``TETHER_REDACT`` accepts (besides ``all`` and ``none``)."""

_KIND_ALIASES = {
    "secret": "secrets", "secrets": "secrets",
    "email": "emails", "emails": "emails",
    "phone": "phones", "phones": "phones",
    "card": "cards", "cards": "cards",
}  # fmt: skip

_SHORT = 64  # strings up to this length are remembered
_CACHE_LIMIT = 8192


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


# Names whose values are credentials: a dict key, or the name in ``name=value`` text. A name may
# carry prefixes (``OPENAI_API_KEY``, ``x-api-key``, ``aws_secret_access_key``).
_CREDENTIAL_WORDS = (
    r"(?:api[_-]?key|apikey|api[_-]?token|secret(?:[_-]?key)?|client[_-]?secret|"
    r"secret[_-]?access[_-]?key|private[_-]?key|password|passwd|passphrase|pwd|"
    r"token|accesstoken|authtoken|authorization|credentials?)"
)
_CREDENTIAL_NAME = r"(?:[A-Za-z0-9]+[_-])*" + _CREDENTIAL_WORDS
_CREDENTIAL_KEY = re.compile(_CREDENTIAL_NAME, re.IGNORECASE)
# The credential gate of the ``secret`` kind as it can appear in JSON text (lowercased), one regex
# per literal it needs: the literal, what may follow it to the end of a credential word, then the
# separator (a quote may be escaped, and whitespace may be written as an escape).
_JSON_SEPARATOR = r"(?:\\?[\"'])?(?:\s|\\[nrtfb]|\\u00[01][0-9a-f]){0,3}[:=]"
_JSON_WORD_ENDS = {
    "key": "",
    "secret": r"(?:[_-]?key)?",
    "pass": r"(?:word|wd|phrase)",
    "pwd": "",
    "token": "",
    "auth": r"(?:orization|token)",
    "credential": "s?",
}
# a longer word each credential word may begin, which is then no credential: when every
# occurrence of the word is the start of this one, its gate cannot match (``input_tokens``)
_JSON_HARMLESS = {"token": "tokens"}
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')  # characters JSON writes escaped
_key_verdicts: dict[str, bool] = {}


def _has_upper(text: str) -> bool:
    return any(ch.isupper() for ch in text)


def _probe_groups(literals: Iterable[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Literals as (probe, members): a literal alone is its own probe (no members); literals
    sharing their first two characters are looked for only when those two are present."""
    by_prefix: dict[str, list[str]] = {}
    for lit in literals:
        by_prefix.setdefault(lit[:2], []).append(lit)
    groups: list[tuple[str, tuple[str, ...]]] = []
    for prefix, members in by_prefix.items():
        if len(members) > 1 and len(prefix) == 2:
            groups.append((prefix, tuple(members)))
        else:
            groups.extend((lit, ()) for lit in members)
    return tuple(groups)


def _is_credential_key(key: str) -> bool:
    verdict = _key_verdicts.get(key)
    if verdict is None:
        verdict = _CREDENTIAL_KEY.fullmatch(key) is not None
        if len(_key_verdicts) >= _CACHE_LIMIT:
            _key_verdicts.clear()
        _key_verdicts[key] = verdict
    return verdict


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str
    regex: str  # ``{g}`` is replaced by a prefix unique to this pattern, for its own groups
    needs: tuple[str, ...] | None = None  # the text contains one of these, or cannot match
    needs_lower: tuple[str, ...] | None = None  # the same, tested on the lowercased text
    gate: str | None = None  # with needs_lower: a regex the lowercased text must then contain
    keep: bool = False  # the group ``{g}k`` is kept in front of the mask (``password=``)
    check: Callable[[str], bool] | None = None  # a match is masked only if this holds
    markers: tuple[tuple[str, str], ...] = ()  # (group suffix, kind) for patterns of two kinds


_TOKEN = "A-Za-z0-9_-"  # characters that continue a token (a match never starts inside one)
_END = r"(?![A-Za-z0-9_-])"


def _lead(literal: str) -> str:
    """``literal`` at the start of a token (the guard comes after it, so the regex engine can
    search for the literal directly)."""
    return re.escape(literal) + f"(?<![{_TOKEN}]{re.escape(literal)})"


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
        r"[spr]k_(?:live|test)_" + f"(?<![{_TOKEN}].k_(?:live|test)_)"
        r"[A-Za-z0-9]{16,}" + _END,
        needs=("_live_", "_test_"),
    ),
    _Pattern(
        "aws_key", r"A(?:KIA|SIA)(?<![A-Z0-9]A...)[A-Z0-9]{16}(?![A-Z0-9])", needs=("AKIA", "ASIA")
    ),
    _Pattern(
        "github_token",
        _lead("g") + r"(?:h[pousr]_[A-Za-z0-9]{30,255}|ithub_pat_[A-Za-z0-9_]{22,255})" + _END,
        needs=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _Pattern("slack_token", _lead("xox") + r"[abposr]-[A-Za-z0-9-]{10,}" + _END, needs=("xox",)),
    _Pattern("google_key", _lead("AIza") + r"[0-9A-Za-z_-]{35}" + _END, needs=("AIza",)),
    _Pattern(
        "jwt",
        _lead("eyJ") + r"[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}" + _END,
        needs=("eyJ",),
    ),
    _Pattern(
        "bearer",
        r"(?P<{g}k>[Bb]earer(?<![A-Za-z0-9_-].earer)\s+)(?=[A-Za-z._~+/-]{0,300}\d)"
        r"[A-Za-z0-9._~+/-]{8,}=*",
        needs=("earer",),
        keep=True,
    ),
    # name=value, name: value, "name": "value" (a quoted value runs to its closing quote)
    _Pattern(
        "secret",
        r"(?<![A-Za-z0-9_-])(?P<{g}k>(?i:" + _CREDENTIAL_NAME + r")[\"']?\s{0,3}[:=]\s{0,3}"
        r"(?:(?P<{g}q>[\"'])(?=[^\"'\n]{3,}(?P={g}q))|(?!(?:null|true|false|None)\b)"
        r"(?![-+]?[\d.]+(?:[\s,;&)}\]]|$))(?=[^\s\"'\[{}]{3,})))"
        r"(?:(?:[Bb]earer|[Bb]asic|[Tt]oken)\s+[^\s\"',;]+|(?<=[\"'])[^\"'\n]+"
        r"|[^\s\"',;&)}\]]+)",
        needs_lower=("key", "secret", "pass", "pwd", "token", "auth", "credential"),
        gate=_CREDENTIAL_WORDS + r"[\"']?\s{0,3}[:=]",
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


class Redactor:
    """Masks secrets and configured personal data in strings and JSON-like values.

    Args:
        patterns: extra kinds to mask, ``{name: regex}``; a match becomes ``[REDACTED:name]``.
        secrets: mask API keys, tokens, JWTs, private keys and credential values (default on).
        emails: mask email addresses.
        phones: mask phone numbers written with a country code or separators.
        cards: mask card numbers (13-19 digits, optionally grouped) that pass the Luhn check.
        extra_literals: exact strings to mask wherever they appear (as ``secret``).

    A redactor is safe to share between threads.
    """

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
        literals = tuple(sorted({s for s in extra_literals if s}, key=len, reverse=True))
        if literals:
            alternatives = "|".join(re.escape(s) for s in literals)
            chosen.append(_Pattern("secret", f"(?:{alternatives})", needs=literals))
        if emails:
            chosen.append(_EMAIL)
        if cards or phones:
            chosen.append(_numbers(cards, phones))
        for name, regex in (patterns or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise UsageError(f"redaction pattern name {name!r}: use letters, digits, _ . -")
            try:
                re.compile(regex)
            except re.error as exc:
                raise UsageError(f"redaction pattern {name!r} is not a valid regex: {exc}") from exc
            chosen.append(_Pattern(name, f"(?:{regex})"))
        kinds = [k for p in chosen for k in ([m[1] for m in p.markers] or [p.kind])]
        if not phones:
            kinds = [k for k in kinds if k != "phone"]
        if not cards:
            kinds = [k for k in kinds if k != "card"]
        self.kinds: tuple[str, ...] = tuple(dict.fromkeys(kinds))
        """The kinds this redactor masks."""
        self._credential_keys = secrets
        self._branches: list[str] = []
        self._kind_of: dict[str, str] = {}  # marker group -> kind
        self._keep_of: dict[str, str] = {}  # marker group -> group kept in front of the mask
        self._check_of: dict[str, Callable[[str], bool]] = {}
        self._always = 0  # bits of the patterns that run on every string
        needs: dict[str, int] = {}  # literal -> bits of the patterns that need it
        lower: dict[str, int] = {}  # the same, tested on the lowercased text
        self._gates: list[tuple[int, re.Pattern[str]]] = []
        for i, p in enumerate(chosen):
            g = f"_r{i}"
            bit = 1 << i
            body = p.regex.replace("{g}", g)
            if p.markers:
                for suffix, kind in p.markers:
                    self._kind_of[g + suffix] = kind
                    if kind == "card" and p.check is not None:
                        self._check_of[g + suffix] = p.check
            else:
                # an empty group at the end is the last one closed: ``lastgroup`` names the kind
                body += f"(?P<{g}>)"
                self._kind_of[g] = p.kind
                if p.keep:
                    self._keep_of[g] = f"{g}k"
                if p.check is not None:
                    self._check_of[g] = p.check
            self._branches.append(body)
            if p.needs is None and p.needs_lower is None:
                self._always |= bit
            for lit in p.needs or ():
                needs[lit] = needs.get(lit, 0) | bit
            for lit in p.needs_lower or ():
                lower[lit] = lower.get(lit, 0) | bit
            if p.gate is not None:
                self._gates.append((bit, re.compile(p.gate)))
        # a literal found also stands for every needed literal inside it
        self._need_bits = {
            lit: bits | _or([b for other, b in needs.items() if other in lit])
            for lit, bits in needs.items()
        }
        ordered = sorted(needs, key=len, reverse=True)
        self._need_rx = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._lower = list(lower.items())
        self._compiled: dict[int, re.Pattern[str]] = {}
        self._short: dict[str, str] = {}
        # what :meth:`json_may_change` looks for in compact JSON text: the needed literals
        # without capitals, then those with (absent from text that has none), each list grouped
        # by shared two-letter prefixes; the credential words, each with its gate
        self._json_plain = _probe_groups([n for n in needs if not _has_upper(n)])
        self._json_capital = _probe_groups([n for n in needs if _has_upper(n)])
        self._json_lower = tuple(
            (
                lit,
                re.compile(re.escape(lit) + _JSON_WORD_ENDS[lit] + _JSON_SEPARATOR),
                _JSON_HARMLESS.get(lit, ""),
            )
            for lit in lower
            if lit in _JSON_WORD_ENDS
        )
        # text escaped beyond ASCII (rare: see tether.journal.events) hides non-ASCII literals
        self._json_non_ascii = any(not lit.isascii() for lit in needs)
        self._json_exact = (
            self._always == 0
            and len(self._json_lower) == len(lower)
            and not any([_JSON_ESCAPED.search(s) for s in needs])
        )
        # no built-in kind matches fewer than 6 characters; custom patterns might
        shortest = [6, *[len(s) for s in literals]] + ([1] if patterns else [])
        self._min_len = min(shortest) if chosen else 1 << 62

    # -- construction from the environment ----------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """A redactor configured by ``TETHER_REDACT`` and ``TETHER_REDACT_PATTERNS``.

        ``TETHER_REDACT`` is a comma list of ``secrets``, ``emails``, ``phones``, ``cards`` (or
        ``all``, or ``none``); unset or empty means ``secrets``. ``TETHER_REDACT_PATTERNS`` is a
        JSON object of extra kinds, ``{"name": "regex"}``. Bad values raise UsageError.
        """
        env = os.environ if environ is None else environ
        raw = env.get("TETHER_REDACT", "")
        enabled: set[str] = {"secrets"}
        if raw.strip():
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
                    raise UsageError(
                        f"TETHER_REDACT: unknown kind {word!r}; use a comma list "
                        f"of {', '.join(KINDS)}, or all, or none"
                    )
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

    def __repr__(self) -> str:
        return f"Redactor(kinds={list(self.kinds)!r})"

    def __bool__(self) -> bool:
        """False when the redactor masks nothing at all."""
        return bool(self.kinds)

    # -- text ---------------------------------------------------------------------------------

    def _regex(self, bits: int) -> re.Pattern[str]:
        rx = self._compiled.get(bits)
        if rx is None:
            parts = [b for i, b in enumerate(self._branches) if bits >> i & 1]
            rx = re.compile("|".join(parts))
            self._compiled[bits] = rx
        return rx

    def _replace(self, m: re.Match[str]) -> str:
        g = m.lastgroup or ""
        check = self._check_of.get(g)
        if check is not None and not check(m.group(0)):
            return m.group(0)
        mask = f"[REDACTED:{self._kind_of[g]}]"
        keep = self._keep_of.get(g)
        return mask if keep is None else (m.group(keep) or "") + mask

    def _scan(self, text: str) -> str:
        bits = self._always
        if self._need_rx is not None:
            need_bits = self._need_bits
            for lit in self._need_rx.findall(text):
                bits |= need_bits[lit]
        if self._lower and ("=" in text or ":" in text):
            low = text.lower()
            found = 0
            for lit, bit in self._lower:
                if not found & bit and lit in low:
                    found |= bit
            for bit, gate in self._gates:
                if found & bit and gate.search(low) is None:
                    found &= ~bit
            bits |= found
        if not bits:
            return text
        out = self._regex(bits).sub(self._replace, text)
        return text if out == text else out

    def json_may_change(self, text: str) -> bool:
        """Whether :meth:`redact` could change a value whose compact JSON text is ``text``.

        ``False`` means surely not, so the engine can skip walking the value: almost every event
        payload has nothing to mask, and one scan of its JSON text is cheaper than visiting each
        string. It errs only towards ``True``: every literal a kind needs appears unchanged in the
        JSON text (literals JSON would escape turn this check off), and a credential name is
        looked for before ``:`` or ``=`` allowing for the escaped quotes and whitespace of JSON
        strings; a dict key that names a credential is written ``name":`` and is found the same
        way. Kinds that need no literal (custom patterns, cards, phones) always answer ``True``.
        """
        if not self._json_exact or (self._json_non_ascii and "\\u" in text):
            return bool(self.kinds)
        for probe, members in self._json_plain:
            if probe in text and (not members or any(m in text for m in members)):
                return True
        low = text.lower()
        if low != text:  # else the text has no capitals, so no literal with one is in it
            for probe, members in self._json_capital:
                if probe in text and (not members or any(m in text for m in members)):
                    return True
        if self._json_lower:
            for lit, gate, harmless in self._json_lower:
                if lit in low:
                    if harmless and low.count(lit) == low.count(harmless):
                        continue  # every occurrence continues into a word that is no credential
                    if gate.search(low) is not None:
                        return True
        return False

    def redact_text(self, text: str) -> str:
        """``text`` with every match masked (the same string when nothing matches)."""
        if len(text) < self._min_len:
            return text
        if len(text) > _SHORT:
            return self._scan(text)
        short = self._short
        done = short.get(text)
        if done is None:
            done = self._scan(text)
            if len(short) >= _CACHE_LIMIT:
                short.clear()
            short[text] = done
        return done

    # -- values -------------------------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """``value`` (a str, or dicts, lists and tuples of JSON-like values) with matches masked.

        The input is never mutated. A container in which something was masked is rebuilt (same
        keys, same order); parts that need no change are reused, so a payload with nothing to
        mask comes back as the very same object. With secrets on, a string or number stored
        under a key that names a credential (``password``, ``api_key``, ``Authorization``,
        ``client_secret``...) is masked whole.
        """
        if not self.kinds:
            return value
        t = type(value)
        if t is str:
            return self.redact_text(value)
        if t is dict:
            return self._redact_dict(value)
        if t is list:
            return self._redact_list(value)
        if t is tuple:
            items = self._redact_list(list(value))
            return value if all(a is b for a, b in zip(items, value, strict=True)) else tuple(items)
        if isinstance(value, Mapping):
            return self._redact_dict(dict(value))
        return value

    def _redact_dict(self, value: dict[Any, Any]) -> dict[Any, Any]:
        # the hot path of the engine (one call per event): lookups are inlined on purpose
        out: dict[Any, Any] | None = None
        check_keys = self._credential_keys
        short = self._short
        min_len = self._min_len
        verdicts = _key_verdicts
        for k, v in value.items():
            tv = type(v)
            if tv is str:
                n = len(v)
                if n < min_len:
                    new: Any = v
                elif n <= _SHORT:
                    new = short.get(v)
                    if new is None:
                        new = self.redact_text(v)
                    elif new is not v and new == v:  # remembered from an equal string
                        new = v
                else:
                    new = self._scan(v)
            elif tv is int or tv is float or tv is bool or v is None:
                if not check_keys or tv is bool or v is None:
                    continue
                new = v
            elif tv is dict:
                new = self._redact_dict(v)
            elif tv is list:
                new = self._redact_list(v)
            else:
                new = self.redact(v)
            if check_keys and tv is not dict and tv is not list and type(k) is str:
                secret = verdicts.get(k)
                if secret is None:
                    secret = _is_credential_key(k)
                if secret and v != "" and tv in (str, int, float):
                    new = "[REDACTED:secret]"
            if new is not v:
                if out is None:
                    out = dict(value)
                out[k] = new
        return value if out is None else out

    def _redact_list(self, value: list[Any]) -> list[Any]:
        out: list[Any] | None = None
        short = self._short
        for i, v in enumerate(value):
            tv = type(v)
            new: Any
            if tv is str:
                new = short.get(v) if len(v) <= _SHORT else None
                if new is None:
                    new = self.redact_text(v)
                elif new is not v and new == v:  # remembered from an equal string
                    new = v
            elif tv is dict:
                new = self._redact_dict(v)
            elif tv is int or tv is float or tv is bool or v is None:
                continue
            else:
                new = self.redact(v)
            if new is not v:
                if out is None:
                    out = list(value)
                out[i] = new
        return value if out is None else out


def _or(bits: Iterable[int]) -> int:
    total = 0
    for b in bits:
        total |= b
    return total
