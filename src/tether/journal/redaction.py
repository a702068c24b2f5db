"""Redaction: mask secrets and personal data in journal payloads and exported telemetry.

    redactor = Redactor(emails=True)
    redactor.redact_text("key sk-proj-... for jane@example.com")
    # 'key [REDACTED:openai_key] for [REDACTED:email]'
    redactor.redact({"result": {"api_key": "abc123", "note": "call +1 415 555 0100"}})

Kinds (a match becomes ``[REDACTED:<kind>]``):

* secrets (on by default): ``openai_key``, ``anthropic_key``, ``aws_key`` (a key id),
  ``aws_secret`` (a secret access key after words such as ``secret access key``, or within a few
  words after a key id), ``github_token``, ``gitlab_token`` (``glpat-`` and the other ``gl*-``
  prefixes), ``slack_token``, ``slack_webhook``, ``stripe_key``, ``google_key``,
  ``huggingface_token`` (``hf_``), ``sendgrid_key`` (``SG.``), ``private_key``, ``jwt``,
  ``url_password`` (the password in ``postgresql://user:password@host``, in any scheme),
  ``bearer`` (the token after ``Bearer``) and ``secret``: the value in ``api_key=...``,
  ``"password": "..."``, ``Authorization: ...`` and the like, and any string or number stored in
  a dict under a key that names a credential;
* ``email``, ``phone`` (with a country code or separators: a bare run of digits such as a product
  id is never a phone number) and ``card`` (13-19 digits passing the Luhn check): off by default;
* custom kinds, ``patterns={"name": regex}``;
* ``extra_literals``: exact strings to mask anywhere (known secret values), as ``secret``.

Speed: the engine redacts every event payload, and almost none contain anything to mask. So each
kind names literal substrings it cannot match without (``sk-``, ``@``, ``AKIA``...); a string is
scanned for those first (C-speed substring tests) and only the kinds that could match run, as one
combined regular expression (compiled once per combination). Short strings, which repeat a lot
(tool names, statuses), are remembered. Patterns begin matching only at the start of a token, so
the scan stays linear even on long strings without spaces. Masking repeats on its own output
until nothing changes (almost always one more pass, taken only when something was masked), so
a secret whose context another match took (a key id before an AWS secret) is masked too.

Dict keys are text like any other: a key holding a secret is masked (equal masked keys get a
suffix, ``#2``, so no entry is lost). The patterns live in :mod:`tether.journal.secret_patterns`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tether.errors import UsageError
from tether.journal.secret_patterns import (
    _CREDENTIAL_KEY,
    _EMAIL,
    _JSON_ESCAPED,
    _JSON_HARMLESS,
    _JSON_SEPARATOR,
    _JSON_WORD_ENDS,
    _JSON_WORD_LEADS,
    _SECRET_PATTERNS,
    _numbers,
    _Pattern,
    luhn_ok,
)

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
_PASSES = 16  # at most this many passes after the first (each one masks something more)


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
        self._gates: list[tuple[int, re.Pattern[str]]] = []  # on the lowercased text
        self._need_gates: list[tuple[int, re.Pattern[str]]] = []  # on the text itself
        gates_of: dict[str, list[re.Pattern[str]] | None] = {}  # literal -> gates (None: none)
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
            gate = None if p.gate is None else re.compile(p.gate)
            for lit in p.needs or ():
                needs[lit] = needs.get(lit, 0) | bit
                known = gates_of.get(lit, [])
                gates_of[lit] = None if known is None or gate is None else [*known, gate]
            for lit in p.needs_lower or ():
                lower[lit] = lower.get(lit, 0) | bit
            if gate is not None:
                (self._gates if p.needs_lower else self._need_gates).append((bit, gate))
        # a literal found also stands for every needed literal inside it
        self._need_bits = {
            lit: bits | _or([b for other, b in needs.items() if other in lit])
            for lit, bits in needs.items()
        }
        ordered = sorted(needs, key=len, reverse=True)
        alternatives = "|".join(map(re.escape, ordered))
        if _overlapping(needs):
            # a literal may begin inside another one found first: look at every position
            alternatives = f"(?=({alternatives}))"
        self._need_rx = re.compile(alternatives) if ordered else None
        self._lower = list(lower.items())
        self._compiled: dict[int, re.Pattern[str]] = {}
        self._short: dict[str, str] = {}
        # what :meth:`json_may_change` looks for in compact JSON text: the needed literals
        # without capitals, then those with (absent from text that has none), each list grouped
        # by shared two-letter prefixes; the literals of gated patterns, each with its gates;
        # the credential words, each with its gate
        plain = [n for n in needs if gates_of[n] is None]
        self._json_plain = _probe_groups([n for n in plain if not _has_upper(n)])
        self._json_capital = _probe_groups([n for n in plain if _has_upper(n)])
        self._json_gated = tuple(
            (lit, tuple(gates)) for lit, gates in gates_of.items() if gates is not None
        )
        self._json_lower = tuple(
            (
                lit,
                re.compile(
                    _JSON_WORD_LEADS.get(lit, "")
                    + re.escape(lit)
                    + _JSON_WORD_ENDS[lit]
                    + _JSON_SEPARATOR
                ),
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
        out = self._scan_once(text)
        if out is text:
            return text
        # a mask may stand next to what it hides the context of (an AWS key id and its secret),
        # and the text a pattern keeps (``secret key is ...``) may hold another secret: masking
        # repeats until nothing changes
        for _ in range(_PASSES):
            again = self._scan_once(out)
            if again is out:
                break
            out = again
        return out

    def _scan_once(self, text: str) -> str:
        bits = self._always
        if self._need_rx is not None:
            need_bits = self._need_bits
            for lit in self._need_rx.findall(text):
                bits |= need_bits[lit]
            for bit, gate in self._need_gates:
                if bits & bit and gate.search(text) is None:
                    bits &= ~bit
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

    def _scan_unfiltered(self, text: str) -> str:
        """What :meth:`_scan` returns, with every pattern run (no literal looked for first): the
        reference the prefilter is tested against."""
        if not self._branches:
            return text
        rx = self._regex((1 << len(self._branches)) - 1)
        out = text
        for _ in range(_PASSES + 1):
            again = rx.sub(self._replace, out)
            if again == out:
                break
            out = again
        return text if out == text else out

    def json_may_change(self, text: str) -> bool:
        """Whether :meth:`redact` could change a value whose compact JSON text is ``text``.

        ``False`` means surely not, so the engine can skip walking the value: almost every event
        payload has nothing to mask, and one scan of its JSON text is cheaper than visiting each
        string. It errs only towards ``True``: every literal a kind needs appears unchanged in the
        JSON text (literals JSON would escape turn this check off), and a credential name is
        looked for before ``:`` or ``=`` allowing for the escaped quotes and whitespace of JSON
        strings; a dict key that names a credential is written ``name":`` and is found the same
        way. A kind with a gate (``url_password``, ``aws_secret``) also needs its gate to match
        the JSON text. Kinds that need no literal (custom patterns, cards, phones) always answer
        ``True``.
        """
        if not self._json_exact or (self._json_non_ascii and "\\u" in text):
            return bool(self.kinds)
        for probe, members in self._json_plain:
            if probe in text and (not members or any(m in text for m in members)):
                return True
        for lit, gates in self._json_gated:
            if lit in text and any(gate.search(text) is not None for gate in gates):
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
        # the cache may hold an equal string made earlier: unchanged text comes back as itself,
        # so a caller can tell "nothing masked" by identity
        return text if done == text else done

    # -- values -------------------------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """``value`` (a str, or dicts, lists and tuples of JSON-like values) with matches masked.

        The input is never mutated. A container in which something was masked is rebuilt (same
        keys, same order, keys holding a secret masked); parts that need no change are reused,
        so a payload with nothing to mask comes back as the very same object. With secrets on, a
        string or number stored under a key that names a credential (``password``, ``api_key``,
        ``Authorization``, ``client_secret``...) is masked whole.
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
        renamed: dict[str, str] | None = None  # keys that hold something to mask
        check_keys = self._credential_keys
        short = self._short
        min_len = self._min_len
        verdicts = _key_verdicts
        for k, v in value.items():
            if type(k) is str and len(k) >= min_len:
                nk = short.get(k) if len(k) <= _SHORT else None
                if nk is None:
                    nk = self.redact_text(k)
                if nk is not k and nk != k:
                    if renamed is None:
                        renamed = {}
                    renamed[k] = nk
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
        if renamed is not None:
            return _rename(value if out is None else out, renamed)
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


def _rename(value: dict[Any, Any], renamed: dict[str, str]) -> dict[Any, Any]:
    """``value`` with some keys replaced, in the same order. A new key never takes the place of
    another: equal ones get a suffix (``[REDACTED:openai_key]#2``), so no entry is lost."""
    out: dict[Any, Any] = {}
    for k, v in value.items():
        nk = renamed.get(k) if type(k) is str else None
        if nk is None:
            out[k] = v
            continue
        candidate, n = nk, 1
        while candidate in out or (candidate in value and candidate not in renamed):
            n += 1
            candidate = f"{nk}#{n}"
        out[candidate] = v
    return out


def _overlapping(literals: Mapping[str, int]) -> bool:
    """Whether some literal ends with the beginning of another one needed by other patterns
    (``ab-s`` and ``sk-``): a scan that takes the first, then goes on after it, misses the
    second."""
    for a, bits_a in literals.items():
        for b, bits_b in literals.items():
            if bits_a == bits_b or a == b:
                continue
            if any(a.endswith(b[:n]) for n in range(1, min(len(a), len(b)))):
                return True
    return False


def _or(bits: Iterable[int]) -> int:
    total = 0
    for b in bits:
        total |= b
    return total
