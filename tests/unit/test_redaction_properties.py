"""Redaction is complete across payload shapes: a planted secret never survives, anywhere.

Secrets of every default kind (and of custom patterns and extra literals) are planted in arbitrary
JSON-like payloads: inside longer strings with arbitrary text around them, as dict keys, as values
under innocuous or credential-named keys, in lists. After ``Redactor.redact`` none of them is left
in the result, whichever way it is encoded; redacting again changes nothing; and payloads made of
innocuous text come back as the very same object.

A secret is planted as a token of its own: the character just before and just after it is a
separator (whitespace, punctuation, quotes, brackets), never a letter, digit, ``_`` or ``-``, which
would make it a longer word (``task-sk-list`` is no key). The text beyond those separators is
arbitrary, including fragments that trigger other kinds (``Bearer``, ``password=``, ``://``...).

The redactor's shortcuts (the literals it looks for before running a pattern, the short-string
cache, the engine's check of the JSON text) are checked against the plain answer: every pattern
run on the text, every value walked.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tether.journal.jsontext import encode_payload_bytes
from tether.journal.redaction import Redactor

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALNUM = string.ascii_letters + string.digits
TOKEN = ALNUM + "_-"
B64 = ALNUM + "/+"
HEX = "0123456789abcdef"
UPPER_DIGITS = string.ascii_uppercase + string.digits


def chars(alphabet: str, low: int, high: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=low if high is None else high)


@st.composite
def with_chars(draw: st.DrawFn, alphabet: str, low: int, high: int | None, required: str) -> str:
    """Random characters with each of ``required`` inserted somewhere (so a secret has, say, a
    capital and a digit, as a random key does)."""
    text = draw(chars(alphabet, low, high))
    for ch in required:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + ch + text[at:]
    return text


# -- secrets of every default kind: (the text planted, the part that must not survive) --------

Secret = tuple[str, str]


def same(s: st.SearchStrategy[str]) -> st.SearchStrategy[Secret]:
    return s.map(lambda text: (text, text))


def joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


OPENAI = same(
    joined(
        st.just("sk-"), st.sampled_from(["", "proj-", "svcacct-", "admin-"]), chars(TOKEN, 20, 60)
    )
)
ANTHROPIC = same(joined(st.just("sk-ant-api03-"), chars(TOKEN, 20, 90)))
STRIPE = same(
    joined(st.sampled_from(["sk", "pk", "rk"]), st.sampled_from(["_live_", "_test_"]),
           chars(ALNUM, 16, 40))
)  # fmt: skip
AWS_KEY_ID = joined(st.sampled_from(["AKIA", "ASIA"]), chars(UPPER_DIGITS, 16))
AWS_SECRET_KEY = with_chars(B64, 38, 38, "Qz")
GITHUB = same(
    joined(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]), chars(ALNUM, 36))
    | joined(st.just("github_pat_"), chars(ALNUM + "_", 82))
)
GITLAB = same(
    joined(
        st.sampled_from(["glpat-", "gldt-", "glrt-", "glcbt-", "glptt-", "glft-", "glimt-",
                         "glagent-", "glsoat-", "glffct-", "gloas-", "GR1348941"]),
        chars(TOKEN, 20, 40),
        st.sampled_from(["", ".01.0y1ydz4cr"]),
    )
    | joined(st.just("glptt-"), chars(HEX, 40))
)  # fmt: skip
SLACK = same(
    joined(st.sampled_from(["xoxb-", "xoxp-", "xoxa-", "xoxe-", "xapp-1-"]),
           chars(ALNUM + "-", 10, 50))
)  # fmt: skip
SLACK_WEBHOOK = st.tuples(
    st.sampled_from(["https://", "http://", ""]),
    st.sampled_from(["services", "workflows", "triggers"]),
    chars(UPPER_DIGITS, 9, 11),
    chars(UPPER_DIGITS, 9, 11),
    chars(ALNUM, 24),
).map(lambda t: (f"{t[0]}hooks.slack.com/{t[1]}/T{t[2]}/B{t[3]}/{t[4]}", f"/B{t[3]}/{t[4]}"))
GOOGLE = same(joined(st.just("AIza"), chars(TOKEN, 35)))
HUGGINGFACE = same(joined(st.just("hf_"), with_chars(string.ascii_letters, 33, 33, "Q")))
SENDGRID = same(joined(st.just("SG."), chars(TOKEN, 22), st.just("."), chars(TOKEN, 43)))
B64URL = TOKEN
JWT = same(
    joined(st.just("eyJ"), chars(B64URL, 10, 40), st.just(".eyJ"), chars(B64URL, 10, 60),
           st.just("."), chars(B64URL, 10, 43))
)  # fmt: skip
PRIVATE_KEY = st.tuples(st.sampled_from(["RSA ", "EC ", "OPENSSH ", ""]),
                        st.lists(chars(B64, 20, 64), min_size=1, max_size=4)).map(
    lambda t: (
        f"-----BEGIN {t[0]}PRIVATE KEY-----\n{chr(10).join(t[1])}\n-----END {t[0]}PRIVATE KEY-----",
        "\n".join(t[1]),
    )
)  # fmt: skip
BEARER = st.tuples(st.sampled_from(["Bearer ", "bearer ", "Bearer  "]),
                   with_chars(ALNUM + "._~+/-", 16, 40, "7")).map(
    lambda t: (t[0] + t[1], t[1])
)  # fmt: skip
CREDENTIAL_NAMES = ["password", "api_key", "OPENAI_API_KEY", "client_secret", "X-Api-Key",
                    "passwd", "pwd", "token", "auth_token", "accessToken", "secret", "SECRET_KEY",
                    "credentials", "private_key", "Authorization", "passphrase", "apiKey",
                    "aws_secret_access_key", "secret-access-key", "SecretKey"]  # fmt: skip
VALUE = with_chars(ALNUM + "!#$%*+./:=?@^_~-", 8, 30, "x5")
QUOTED_VALUE = with_chars(ALNUM + " !#$%*+./:=?@^_~-", 8, 30, "x5")
CREDENTIAL = st.one_of(
    st.tuples(st.sampled_from(CREDENTIAL_NAMES), st.sampled_from(["=", ": ", " = ", ":", "\t= "]),
              VALUE).map(lambda t: (t[0] + t[1] + t[2], t[2])),
    st.tuples(st.sampled_from(CREDENTIAL_NAMES), st.sampled_from(['": "', "': '", '" : "']),
              QUOTED_VALUE).map(lambda t: (f"{t[1][0]}{t[0]}{t[1]}{t[2]}{t[1][-1]}", t[2])),
    st.tuples(st.sampled_from(["Basic ", "Token ", "Bearer "]), VALUE).map(
        lambda t: (f"Authorization: {t[0]}{t[1]}", t[1])
    ),
)  # fmt: skip
URL_PASSWORD = st.tuples(
    st.sampled_from(["postgresql", "postgres", "postgresql+psycopg", "mysql", "mariadb", "redis",
                     "rediss", "amqp", "amqps", "mongodb", "mongodb+srv", "mssql", "https"]),
    chars(string.ascii_lowercase + string.digits + "_.", 0, 12),
    with_chars(ALNUM + "!$%*+.~_=-", 8, 30, "a1"),
    st.sampled_from(["db.internal:5432/prod", "localhost/0", "cluster0.example.net/app?ssl=true",
                     "10.0.0.5:6379", "rabbit//"]),
).map(lambda t: (f"{t[0]}://{t[1]}:{t[2]}@{t[3]}", t[2]))  # fmt: skip


@st.composite
def aws_secret(draw: st.DrawFn) -> Secret:
    key = draw(AWS_SECRET_KEY)
    key_id = draw(AWS_KEY_ID)
    context = draw(
        st.sampled_from(["aws_secret_access_key = ", "AWS secret access key: ", "AWS_SECRET ",
                         "the secret access key is ", "SecretAccessKey=", "secret_key ",
                         "my AWS secret is ", "Secret Key: ", f"{key_id} ", f"{key_id}:",
                         f"{key_id} / ", f"id {key_id} secret "])
    )  # fmt: skip
    return context + key, (key if key_id not in context else f"{key_id}|{key}")


DEFAULT_SECRETS: list[st.SearchStrategy[Secret]] = [
    OPENAI, ANTHROPIC, STRIPE, same(AWS_KEY_ID), aws_secret(), GITHUB, GITLAB, SLACK,
    SLACK_WEBHOOK, GOOGLE, HUGGINGFACE, SENDGRID, JWT, PRIVATE_KEY, BEARER, CREDENTIAL,
    URL_PASSWORD,
]  # fmt: skip

# -- what surrounds a planted secret ------------------------------------------------------------

BEFORE = [*" \n\t,.;:!?()[]{}<>\"'|*&#=", "\\n", " (", '="', "= '"]
AFTER = [*" \n\t,.;:!?()[]{}<>\"'|*&#", "\\n", ") ", '",']
# pieces of text that trigger kinds, alone or around a secret
FRAGMENTS = [
    "sk-", "AKIA", "Bearer ", "bearer", "password", "token", "api_key", "=", ":", ": ", '"', "'",
    " ", "\n", "://", "@", "secret", "Secret ", "key", "access", "hf_", "SG.", "glpat-", "eyJ",
    "hooks.slack.com/", "xoxb-", "https", "postgresql", "x", "1", "A", "/", "+", "_", "-", ".",
    "é", "\u212a", "\u017f", "\u00a0", "\u2003", "日本", "\\", "null", "TCK-", "-----BEGIN ",
]  # fmt: skip
TEXT = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join)


@st.composite
def surrounded(draw: st.DrawFn, secret: st.SearchStrategy[Secret]) -> Secret:
    text, core = draw(secret)
    before = draw(st.just("") | joined(TEXT, st.sampled_from(BEFORE)))
    after = draw(st.just("") | joined(st.sampled_from(AFTER), TEXT))
    return before + text + after, core


# -- payloads -----------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
PAYLOADS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip


def containers(value: Any) -> Iterator[dict[str, Any] | list[Any]]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from containers(v)
    elif isinstance(value, list):
        yield value
        for v in value:
            yield from containers(v)


def strings(value: Any) -> Iterator[str]:
    """Every string in a value, dict keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from strings(v)


@st.composite
def planted(draw: st.DrawFn, secrets: list[st.SearchStrategy[Secret]]) -> tuple[Any, list[str]]:
    """A payload with secrets put in at random places; the parts that must not survive."""
    payload: Any = draw(PAYLOADS)
    if not isinstance(payload, dict | list):
        payload = [payload]
    cores = []
    for i in range(draw(st.integers(1, 4))):
        text, core = draw(surrounded(st.one_of(secrets)))
        cores.append(core)
        where = draw(st.sampled_from(list(containers(payload))))
        how = draw(st.sampled_from(["key", "value", "credential", "list", "nested"]))
        item: Any = text
        if how == "nested":
            item = draw(st.sampled_from([[text], {"note": text}, [{"log": [text]}]]))
        if isinstance(where, list):
            where.insert(draw(st.integers(0, len(where))), item)
        elif how == "key":
            where[text] = draw(SCALARS)
        elif how == "credential":
            where[f"db{i}_" + draw(st.sampled_from(["password", "api_key", "token"]))] = core
            where["Authorization"] = core
        else:
            where[f"note {i}"] = item
    return payload, cores


def assert_gone(out: Any, cores: list[str]) -> None:
    texts = [
        json.dumps(out, ensure_ascii=False),
        json.dumps(out, ensure_ascii=True),
        encode_payload_bytes(out).decode(),
        *strings(out),
    ]
    for core in cores:
        for part in core.split("|"):
            for text in texts:
                assert part not in text, (part, text)


def assert_consistent(r: Redactor, payload: Any, out: Any) -> None:
    """Redacting again changes nothing; a fresh redactor (no cache) says the same; the JSON
    pre-check said yes for a payload that changed; the prefilter agrees with the plain scan."""
    assert r.redact(out) == out
    if out != payload:
        for text in (
            encode_payload_bytes(payload).decode(),
            json.dumps(payload, ensure_ascii=True, separators=(",", ":")),
        ):
            assert r.json_may_change(text), text
    for s in strings(payload):
        assert r.redact_text(s) == r._scan_unfiltered(s) or len(s) < r._min_len, s


DEFAULT = Redactor()


@SETTINGS
@given(planted(DEFAULT_SECRETS))
def test_no_default_secret_survives_anywhere(case: tuple[Any, list[str]]) -> None:
    payload, cores = case
    before = json.dumps(payload)
    out = DEFAULT.redact(payload)
    assert json.dumps(payload) == before  # the input is never changed
    assert_gone(out, cores)
    assert_consistent(DEFAULT, payload, out)
    assert Redactor().redact(payload) == out  # the same without anything remembered


@SETTINGS
@given(st.one_of(*(surrounded(s) for s in DEFAULT_SECRETS)))
def test_redact_text_masks_every_default_secret(case: Secret) -> None:
    text, core = case
    out = DEFAULT.redact_text(text)
    for part in core.split("|"):
        assert part not in out, (part, out)
    assert DEFAULT.redact_text(out) == out
    assert out == DEFAULT._scan_unfiltered(text)


# -- custom patterns and extra literals -------------------------------------------------------

LITERAL = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6, max_size=20
)


@st.composite
def configured(draw: st.DrawFn) -> tuple[Redactor, list[st.SearchStrategy[Secret]]]:
    prefix = draw(chars(string.ascii_uppercase, 3))
    literals = draw(st.lists(LITERAL, min_size=1, max_size=3))
    masks = ["[REDACTED:secret]", "[REDACTED:ticket]", "[REDACTED:custom]"]
    # a literal inside a mask would be masked forever (and is no secret anyone holds)
    assume(all(lit not in mask for lit in literals for mask in masks))
    assume(all(a not in b for a in literals for b in literals if a != b))
    redactor = Redactor({"ticket": r"TCK-\d{6}", "custom": rf"{prefix}-[0-9a-f]{{8}}"},
                        extra_literals=literals)  # fmt: skip
    secrets = [
        same(joined(st.just("TCK-"), chars(string.digits, 6))),
        same(joined(st.just(f"{prefix}-"), chars(HEX, 8))),
        same(st.sampled_from(literals)),
    ]
    return redactor, secrets


@SETTINGS
@given(st.data())
def test_custom_patterns_and_literals_never_survive(data: st.DataObject) -> None:
    redactor, secrets = data.draw(configured())
    payload, cores = data.draw(planted([*secrets, *DEFAULT_SECRETS]))
    out = redactor.redact(payload)
    assert_gone(out, cores)
    assert_consistent(redactor, payload, out)


# -- the prefilter and the JSON pre-check on arbitrary text ------------------------------------


@SETTINGS
@given(TEXT, st.sampled_from([DEFAULT, Redactor(emails=True, phones=True, cards=True)]))
def test_the_prefilter_never_changes_the_answer(text: str, r: Redactor) -> None:
    """Looking for literals first only skips work: the answer is that of every pattern run."""
    out = r.redact_text(text)
    assert out == r._scan_unfiltered(text) or len(text) < r._min_len
    assert r.redact_text(out) == out


TRICKY_PAYLOADS = st.recursive(
    SCALARS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)


@SETTINGS
@given(TRICKY_PAYLOADS)
def test_the_json_precheck_never_says_no_to_a_payload_that_changes(payload: Any) -> None:
    out = DEFAULT.redact(payload)
    if out != payload:
        assert DEFAULT.json_may_change(encode_payload_bytes(payload).decode())
        assert DEFAULT.json_may_change(json.dumps(payload, ensure_ascii=True))
    else:
        assert out is payload
    assert DEFAULT.redact(out) == out


# -- no false positives ---------------------------------------------------------------------------

# innocuous text: words of ordinary prose (near misses of credential names included, none of them
# followed by what would make it one), non-ASCII words, and the identifiers, hashes, timestamps and
# URLs tool results are full of, joined by spaces and punctuation
WORDS = [
    "order", "status", "pending", "delivered", "the", "customer", "asked", "about", "a", "refund",
    "shipping", "keys", "keyboard", "tokens", "secretary", "passage", "author", "authority",
    "Desk", "task", "skeleton", "ask", "risk", "glass", "glad", "hf", "SG", "GR", "email",
    "High-light", "night", "flight", "input_tokens", "max_tokens", "token_count", "item",
]  # fmt: skip
IDS = st.one_of(
    chars(string.digits, 7).map(lambda d: f"#W{d}"),
    chars(string.digits, 10),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    chars(HEX, 64),
    chars(HEX, 40),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(str),
    st.decimals(places=2, allow_nan=False, allow_infinity=False).map(lambda d: f"${d}"),
    chars(string.ascii_lowercase, 3, 10).map(lambda w: f"https://example.com/{w}?page=2"),
    st.just("https://shop.example.com:8443/orders/7"),
)
NON_ASCII = st.text(
    alphabet=st.characters(min_codepoint=0xC0, categories=("L", "M", "N")), min_size=1, max_size=8
)
SEPARATORS = [" ", ", ", ". ", "\n", ": ", " = ", " - ", "/", " (", ") ", '"', "; ", "\t"]
INNOCUOUS = st.lists(
    st.tuples(st.sampled_from(WORDS) | IDS | NON_ASCII, st.sampled_from(SEPARATORS)),
    max_size=12,
).map(lambda parts: "".join(w + s for w, s in parts))
INNOCUOUS_KEYS = st.sampled_from(
    ["order_id", "status", "items", "price", "input_tokens", "max_tokens", "token_count",
     "idempotency_key", "args_hash", "password_hint", "keyboard", "note"]
) | NON_ASCII  # fmt: skip
INNOCUOUS_PAYLOADS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | INNOCUOUS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(INNOCUOUS_KEYS, inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
WITH_CUSTOM = Redactor({"ticket": r"TCK-\d{6}"}, extra_literals=["hunter2-prod"])


@SETTINGS
@given(INNOCUOUS_PAYLOADS)
def test_innocuous_payloads_come_back_as_they_are(payload: Any) -> None:
    for r in (DEFAULT, WITH_CUSTOM):
        assert r.redact(payload) is payload
    for s in strings(payload):
        assert DEFAULT.redact_text(s) == s


@SETTINGS
@given(INNOCUOUS)
def test_innocuous_text_is_untouched(text: str) -> None:
    assert DEFAULT.redact_text(text) == text
    assert DEFAULT._scan_unfiltered(text) == text
