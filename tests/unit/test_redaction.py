"""Redactor: secrets and personal data masked in text and JSON-like values, nothing else."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from tether.errors import UsageError
from tether.journal.redaction import Redactor, luhn_ok

# Fake credentials, shaped like the real ones.
OPENAI_KEY = "sk-proj-4fQ9xT2mVb7LzR1cN8kW3yHj6DpS0aGe5uIo_Qw3Er-Ty7UiOpAsDfGhJkLzXcVbNm12"
OPENAI_LEGACY = "sk-T3BlbkFJq8Zr2Xw5Nc7Vb1Mn4Kj6Hg9Fd0Sa3Qe"
ANTHROPIC_KEY = "sk-ant-api03-R2d2C3poBb8Yoda_Lu-ke9Han0Solo7Leia4Chewie1Vader5-ObiWan6AA"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_PAT = "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV"
SLACK_TOKEN = "xoxb-2048576123-4096123456789-Zq8Wx7Ec6Rv5Tb4Yn3Um2Ik1"
STRIPE_KEY = "sk_live_51H8aBcDeFgHiJkLmNoPqRsTuV"
GOOGLE_KEY = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98n3Yq0Xz\nq9yGmL2k0Vx1\n"
    "-----END RSA PRIVATE KEY-----"
)
EMAIL = "amelia.ito8974@example.com"
GITLAB_PAT = "glpat-a7rhywlOQc22s2wu6ksw"
HF_TOKEN = "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"
SENDGRID_KEY = "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"
SLACK_WEBHOOK = "https://hooks.slack.com/services/T0A1B2C3D/B4E5F6G7H/aBcDeFgHiJkLmNoPqRsTuVwX"


@pytest.fixture
def r() -> Redactor:
    return Redactor(emails=True, phones=True, cards=True)


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "kind"),
    [
        (f"use {OPENAI_KEY} for prod", OPENAI_KEY, "openai_key"),
        (f"OPENAI key: '{OPENAI_LEGACY}'.", OPENAI_LEGACY, "openai_key"),
        (f"x={ANTHROPIC_KEY}", ANTHROPIC_KEY, "anthropic_key"),
        (f"aws id {AWS_KEY}, region us-east-1", AWS_KEY, "aws_key"),
        (f"token {GITHUB_TOKEN}", GITHUB_TOKEN, "github_token"),
        (f"pat={GITHUB_PAT}", GITHUB_PAT, "github_token"),
        (f"slack: {SLACK_TOKEN}", SLACK_TOKEN, "slack_token"),
        (f"stripe {STRIPE_KEY}", STRIPE_KEY, "stripe_key"),
        (f"maps {GOOGLE_KEY}", GOOGLE_KEY, "google_key"),
        (f"session {JWT} expires", JWT, "jwt"),
        (f"key file:\n{PEM}\nend", "MIIEowIBAAKCAQEA7bq98n3Yq0Xz", "private_key"),
        (f"export GITLAB_TOKEN {GITLAB_PAT}", GITLAB_PAT, "gitlab_token"),
        (
            "deploy gldt-Zx9Qw8Er7Ty6Ui5Op4As and runner glrt-t1_Zx9Qw8Er7Ty6Ui5Op4As3",
            "Zx9Qw8Er7Ty6Ui5Op4As",
            "gitlab_token",
        ),
        ("routable glpat-AbCdEfGhIjKlMnOpQrStUvWxYz0.01.0y1ydz4cr.", "0y1ydz4cr", "gitlab_token"),
        (f"HF_TOKEN is {HF_TOKEN}", HF_TOKEN, "huggingface_token"),
        (f"sendgrid: {SENDGRID_KEY}", SENDGRID_KEY, "sendgrid_key"),
        (f"notify {SLACK_WEBHOOK} on failure", "aBcDeFgHiJkLmNoPqRsTuVwX", "slack_webhook"),
        (f"my AWS secret access key is {AWS_SECRET}, thanks", AWS_SECRET, "aws_secret"),
        (f"creds {AWS_KEY} / {AWS_SECRET}", AWS_SECRET, "aws_secret"),
        (f"SecretAccessKey {AWS_SECRET}", AWS_SECRET, "aws_secret"),
    ],
)
def test_secret_formats_are_masked(r: Redactor, text: str, secret: str, kind: str) -> None:
    out = r.redact_text(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("postgresql://app:s3cr3t-P4ss@db.internal:5432/prod", "postgresql://app:"),
        ("mysql://root:hunter2@127.0.0.1/shop", "mysql://root:"),
        ("redis://:p4ssw0rd@cache:6379/0", "redis://:"),
        ("rediss://default:Zx9Qw8@cache.example.com:6380", "rediss://default:"),
        ("amqp://guest:guest-42@rabbit:5672//", "amqp://guest:"),
        ("mongodb+srv://admin:Pa55!word@cluster0.mongodb.net/test?w=majority", "mongodb+srv://admin:"),
        ("postgresql+psycopg://u:p%40ss@h/db", "postgresql+psycopg://u:"),
        ("https://deploy:tok3n@git.example.com/repo.git", "https://deploy:"),
    ],
)  # fmt: skip
def test_passwords_in_connection_urls_are_masked(url: str, kept: str) -> None:
    out = Redactor().redact_text(f"DATABASE_URL {url} (primary)")
    password = url[len(kept) :].split("@")[0]
    assert password not in out
    assert f"{kept}[REDACTED:url_password]@" in out and out.endswith(" (primary)")


def test_secrets_as_dict_keys_are_masked_and_no_entry_is_lost() -> None:
    data = {OPENAI_KEY: 1, GITHUB_TOKEN: {"x": 2}, "[REDACTED:openai_key]": 3, "ok": "sk-"}
    out = Redactor().redact(data)
    assert list(out) == [
        "[REDACTED:openai_key]#2", "[REDACTED:github_token]", "[REDACTED:openai_key]", "ok"
    ]  # fmt: skip
    assert list(out.values()) == list(data.values())
    assert Redactor().redact(out) == out


def test_bearer_token_keeps_the_scheme() -> None:
    out = Redactor().redact_text("GET /v1/orders\nAuthorization: Bearer 9f8e7d6c5b4a3f2e1d0c")
    assert "9f8e7d6c5b4a3f2e1d0c" not in out
    assert out.startswith("GET /v1/orders\nAuthorization: ")
    out = Redactor().redact_text("curl -H 'X-Token: x' -H \"bearer abc.DEF_123-xyz\"")
    assert "abc.DEF_123-xyz" not in out and "bearer [REDACTED:bearer]" in out


@pytest.mark.parametrize(
    ("text", "value", "kept"),
    [
        ("api_key=abc123xyz&user=bob", "abc123xyz", "api_key=[REDACTED:secret]&user=bob"),
        ('{"password": "correct horse battery", "user": "bob"}', "correct horse",
         '{"password": "[REDACTED:secret]", "user": "bob"}'),
        ("OPENAI_API_KEY=notsk-0123456789", "notsk-0123456789", "OPENAI_API_KEY=[REDACTED:secret]"),
        (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET,
         "aws_secret_access_key = [REDACTED:secret]"),
        ("client_secret: 'Zx9-Qw8_Er7'", "Zx9-Qw8_Er7", "client_secret: '[REDACTED:secret]'"),
        ("X-Api-Key: 9f8e7d6c5b4a", "9f8e7d6c5b4a", "X-Api-Key: [REDACTED:secret]"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Authorization: [REDACTED:secret]"),
        ("db password=hunter2; retry", "hunter2", "db password=[REDACTED:secret]; retry"),
    ],
)  # fmt: skip
def test_credential_values_are_masked_and_names_kept(text: str, value: str, kept: str) -> None:
    out = Redactor().redact_text(text)
    assert value not in out
    assert out == kept


def test_credential_keys_in_dicts_mask_the_whole_value() -> None:
    data = {
        "password": "hunter2",
        "api_key": 1234567,
        "Authorization": "Basic dXNlcjpwYXNz",
        "OPENAI_API_KEY": "anything at all",
        "client_secret": "s3cr3t",
        "input_tokens": 120,
        "max_tokens": 512,
        "token_count": 3,
        "idempotency_key": "run1:2:call_3",
        "args_hash": "44d821d476b76cb02e432bc2b4bce0105dfbcf02f4a347824d81959e8078a2aa",
        "token": None,
        "has_password": True,
        "password_hint": "",
    }
    out = Redactor().redact(data)
    for key in ("password", "api_key", "Authorization", "OPENAI_API_KEY", "client_secret"):
        assert out[key] == "[REDACTED:secret]", key
    for key in ("input_tokens", "max_tokens", "token_count", "idempotency_key", "args_hash",
                "token", "has_password", "password_hint"):  # fmt: skip
        assert out[key] == data[key], key


# -- personal data -----------------------------------------------------------------------------


def test_emails(r: Redactor) -> None:
    out = r.redact_text(f"Contact {EMAIL} or Mary-Jane.O'Neil+orders@mail.shop.co.uk today.")
    assert EMAIL not in out and "mail.shop.co.uk" not in out
    assert out.count("[REDACTED:email]") == 2
    assert Redactor().redact_text(f"write to {EMAIL}") == f"write to {EMAIL}"  # off by default


@pytest.mark.parametrize(
    "phone", ["+1 415 555 0100", "+44 20 7946 0958", "(415) 555-0100", "415-555-0100",
              "415.555.0100", "+33 1 23 45 67 89", "+14155550100"],
)  # fmt: skip
def test_phone_numbers(r: Redactor, phone: str) -> None:
    assert r.redact_text(f"call {phone} now") == "call [REDACTED:phone] now"


@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444",
             "3782 822463 10005", "6011000990139424"],
)  # fmt: skip
def test_card_numbers_that_pass_luhn(r: Redactor, card: str) -> None:
    assert r.redact_text(f"paid with {card}.") == "paid with [REDACTED:card]."


def test_card_like_numbers_failing_luhn_are_kept(r: Redactor) -> None:
    for number in ("4111 1111 1111 1112", "1234567890123456", "9999999999999995"):
        assert r.redact_text(f"ref {number}") == f"ref {number}"


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


# -- no false positives ------------------------------------------------------------------------

ORDINARY = [
    "Your order #W2378156 is pending; item 1151293680 (product 8310926033) ships soon.",
    "order_id=#W2443586 status=delivered total=154.22 currency=USD",
    '{"order_id":"#W5918442","items":[{"item_id":"6342039236","price":30.58}],"zip":"78701"}',
    "user amelia_ito_8974 at 12 Main St, Austin TX 78701, on 2024-05-12 at 10:30",
    "run 20d7f57b642a4c6598fb61f9adc538c4 hash 44d821d476b76cb02e432bc2b4bce0105dfbcf02f4a3478",
    "uuid 123e4567-e89b-12d3-a456-426614174000, version 1.2.3, ip 10.0.0.1, price +5.00",
    "the bearer of bad news; Bearer responsibilities; a Mechanical Keyboard with keys",
    "risk-assessment-framework-for-everyone and task-sk-list and desk-skeleton-keys",
    "model openai:gpt-4o-mini then anthropic:claude-sonnet-4-6 (input_tokens: 2420)",
    "token: 1234, tokens: many, password: null, secret: true, max_tokens: 512",
    "a 1 250 000 000 budget, call_7, AKIA alone, sk- alone, eyJ alone, @home, x@y",
    "Tracking 1Z999AA10123456784 and SKU ABC-12345-XYZ; 555-0100 is too short to call",
    "order #W2378156 placed 2024-05-12T10:30:00Z, updated 2024-05-12T10:31:07.123456+00:00",
    "id 123e4567-e89b-12d3-a456-426614174000 / 123e4567e89b12d3a456426614174000",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d08b3d4ba1b1c, "
    "commit 44d821d476b76cb02e432bc2b4bce0105dfbcf02 (the secret key of it is trust)",
    "see https://shop.example.com:8443/orders/7?page=2 and https://example.com/a:b",
    "glass-half-full-of-water-today; hf_transformers_pipeline_config; SG.module.name",
    "the hooks of slack season; a secretary keeps the keys; AKIA alone; glpat- alone",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_untouched(r: Redactor, text: str) -> None:
    assert r.redact_text(text) == text


def test_order_and_product_ids_survive_every_kind() -> None:
    everything = Redactor({"ticket": r"TCK-\d{6}"}, emails=True, phones=True, cards=True)
    payload = {"order_id": "#W2378156", "product_id": "8310926033", "item_ids": ["1151293680"]}
    assert everything.redact(payload) is payload


# -- structures --------------------------------------------------------------------------------


def test_nested_structures_keep_keys_and_never_mutate(r: Redactor) -> None:
    data: dict[str, Any] = {
        "call_id": "call_3",
        "ok": True,
        "duration_ms": 1.5,
        "result": {
            "customer": {"name": "Amelia Ito", "email": EMAIL, "phone": "+1 415 555 0100"},
            "notes": [f"rotate {AWS_KEY}", ("tuple", GITHUB_TOKEN), 3, None, False],
            "order_id": "#W2378156",
        },
    }
    before = copy.deepcopy(data)
    out = r.redact(data)
    assert data == before  # the input is untouched
    assert out is not data and out["result"] is not data["result"]
    assert list(out) == list(data) and list(out["result"]) == list(data["result"])
    assert out["result"]["customer"] == {
        "name": "Amelia Ito", "email": "[REDACTED:email]", "phone": "[REDACTED:phone]",
    }  # fmt: skip
    assert out["result"]["notes"] == [
        "rotate [REDACTED:aws_key]", ("tuple", "[REDACTED:github_token]"), 3, None, False,
    ]  # fmt: skip
    assert out["result"]["order_id"] == "#W2378156"
    assert out["ok"] is True and out["duration_ms"] == 1.5


def test_nothing_to_mask_returns_the_same_object(r: Redactor) -> None:
    payload = {"call_id": "call_1", "tool": "get_order_details", "args": {"order_id": "#W1"},
               "list": [1, "two", {"three": 3.0}]}  # fmt: skip
    assert r.redact(payload) is payload
    assert r.redact("plain") == "plain"
    assert r.redact(42) == 42 and r.redact(None) is None


def test_tool_result_with_an_api_key_and_an_email() -> None:
    """A tool_finished payload: the key and the address leave neither the text nor the dict."""
    result = {
        "integration": "payments",
        "config": {"endpoint": "https://api.example.com/v1", "key": OPENAI_KEY},
        "owner": {"name": "Amelia Ito", "contact": EMAIL},
        "log": f"connected with key {OPENAI_KEY} on behalf of {EMAIL}",
    }
    payload = {"call_id": "call_9", "ok": True, "duration_ms": 12.3,
               "content": json.dumps(result), "result": result}  # fmt: skip
    out = Redactor(emails=True).redact(payload)
    text = json.dumps(out)
    assert OPENAI_KEY not in text and EMAIL not in text
    assert "sk-proj" not in text and "example.com/v1" in text
    assert json.loads(out["content"])["owner"]["contact"] == "[REDACTED:email]"  # still JSON
    assert out["result"]["config"]["key"] == "[REDACTED:openai_key]"


def test_redacted_json_text_stays_valid_json(r: Redactor) -> None:
    doc = {
        "api_key": "abc123456", "password": "p w d", "nested": {"token": "tok_123456789"},
        "email": EMAIL, "card": "4111 1111 1111 1111", "n": 5, "s": f"key {OPENAI_KEY}",
    }  # fmt: skip
    compact = json.dumps(doc, separators=(",", ":"))
    for text in (json.dumps(doc), json.dumps(doc, indent=2), compact):
        out = json.loads(r.redact_text(text))
        assert set(out) == set(doc)
        assert out["api_key"] == out["password"] == "[REDACTED:secret]"
        assert out["nested"]["token"] == "[REDACTED:secret]"
        assert out["email"] == "[REDACTED:email]" and out["card"] == "[REDACTED:card]"
        assert out["s"] == "key [REDACTED:openai_key]" and out["n"] == 5


# -- configuration -----------------------------------------------------------------------------


def test_custom_patterns_and_literals() -> None:
    r = Redactor({"ticket": r"TCK-\d{6}", "iban": r"\bDE\d{20}\b"},
                 extra_literals=["hunter2-prod", ""])  # fmt: skip
    out = r.redact_text("TCK-123456 pays DE89370400440532013000 with hunter2-prod")
    assert out == "[REDACTED:ticket] pays [REDACTED:iban] with [REDACTED:secret]"
    assert r.kinds[-2:] == ("ticket", "iban") and "secret" in r.kinds
    assert Redactor({"pin": r"\b\d{4}\b"}, secrets=False).redact({"p": "1234"}) == {
        "p": "[REDACTED:pin]"
    }


def test_secrets_can_be_turned_off() -> None:
    r = Redactor(secrets=False)
    assert not r and r.kinds == ()
    assert r.redact_text(f"k {OPENAI_KEY}") == f"k {OPENAI_KEY}"
    assert r.redact({"password": "x1234"}) == {"password": "x1234"}


def test_bad_patterns_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="not a valid regex"):
        Redactor({"broken": "(unclosed"})
    with pytest.raises(UsageError, match="pattern name"):
        Redactor({"bad name!": "x"})


def test_from_env() -> None:
    default = Redactor.from_env({})
    assert "openai_key" in default.kinds and "email" not in default.kinds
    r = Redactor.from_env({"TETHER_REDACT": "secrets, emails,phones,cards"})
    assert {"openai_key", "email", "phone", "card"} <= set(r.kinds)
    only = Redactor.from_env({"TETHER_REDACT": "emails"})
    assert only.kinds == ("email",)
    assert Redactor.from_env({"TETHER_REDACT": "none"}).kinds == ()
    assert set(Redactor.from_env({"TETHER_REDACT": "all"}).kinds) >= {"email", "card", "phone"}
    custom = Redactor.from_env({"TETHER_REDACT_PATTERNS": '{"employee": "EMP-\\\\d{5}"}'})
    assert custom.redact_text("EMP-12345 and sk-nothing") == "[REDACTED:employee] and sk-nothing"
    with pytest.raises(UsageError, match="unknown kind"):
        Redactor.from_env({"TETHER_REDACT": "secrets,ssn"})
    with pytest.raises(UsageError, match="not valid JSON"):
        Redactor.from_env({"TETHER_REDACT_PATTERNS": "{oops"})
    with pytest.raises(UsageError, match="JSON object"):
        Redactor.from_env({"TETHER_REDACT_PATTERNS": '["x"]'})


def test_env_is_read_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_REDACT", "emails")
    assert Redactor.from_env().kinds == ("email",)


# -- cost --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["y" * 200_000, "a_" * 100_000, "a@" * 100_000, "1" * 200_000, "1-" * 100_000, "+1 " * 60_000,
     "password= " * 20_000, "Bearer " * 25_000, '"password": "' * 15_000, "gh" * 100_000,
     "a@b." * 50_000, "sk-" * 60_000, "eyJabcdefghij." * 15_000],
)  # fmt: skip
def test_pathological_input_stays_linear(r: Redactor, text: str) -> None:
    started = time.perf_counter()
    r.redact_text(text)
    assert time.perf_counter() - started < 2.0


def test_a_typical_payload_is_cheap(r: Redactor) -> None:
    payload = {"call_id": "call_7", "ok": True, "duration_ms": 0.41,
               "content": '{"order_id":"#W2378156","status":"pending","items":[{"item_id":'
               '"1151293680","name":"Water Bottle","price":30.58}],"address":"12 Main St"}',
               "result": {"order_id": "#W2378156", "status": "pending"}}  # fmt: skip
    for redactor in (Redactor(), r):
        started = time.perf_counter()
        for _ in range(1000):
            redactor.redact(json.loads(json.dumps(payload)))
        per_payload = (time.perf_counter() - started) / 1000
        assert per_payload < 0.002  # generous: measured in tens of microseconds on slow machines


# -- the engine's pre-check on encoded payloads ------------------------------------------------

MASKED_VALUES: list[Any] = [
    {"content": f"use {OPENAI_KEY} for prod"},
    {"result": {"config": {"key": GITHUB_TOKEN}}},
    {"args": {"password": "hunter2"}},
    {"args": {"X-Api-Key": 12345678}},
    {"nested": [{"Authorization": "Basic dXNlcjpwYXNz"}]},
    {"content": json.dumps({"password": "correct horse battery"})},  # quotes escaped in JSON
    {"content": "api_key=abc123xyz&user=bob"},
    {"content": "client_secret:\n'Zx9-Qw8_Er7'"},  # whitespace written as an escape
    {"content": "db passphrase\t= swordfish-42"},
    {"content": "authorization: Basic dXNlcjpwYXNz"},
    {"content": f"aws_secret_access_key = {AWS_SECRET}"},
    {"content": f"key file:\n{PEM}\nend"},
    {"content": f"session {JWT} expires"},
    {"content": "GET /\nAuthorization: Bearer 9f8e7d6c5b4a3f2e1d0c"},
    {"response": {"text": f"here: {SLACK_TOKEN}", "usage": {"input_tokens": 3}}},
    {"accessToken": "abc", "authtoken": "def", "credentials": "ghi", "pwd": "jkl"},
]


@pytest.mark.parametrize("value", MASKED_VALUES)
def test_json_precheck_never_misses_what_redact_masks(value: dict[str, Any]) -> None:
    """json_may_change may say yes needlessly, never no when redact would change something."""
    for redactor in (Redactor(), Redactor(emails=True), Redactor(extra_literals=["swordfish"])):
        assert redactor.redact(value) is not value
        for text in (
            json.dumps(value, separators=(",", ":"), ensure_ascii=False),
            json.dumps(value),
        ):
            assert redactor.json_may_change(text), text


@pytest.mark.parametrize("text", ORDINARY)
def test_json_precheck_lets_ordinary_payloads_through(text: str) -> None:
    """The point of the pre-check: typical payloads skip the walk (no literal, no credential)."""
    redactor = Redactor()
    payload = {"call_id": "call_1", "ok": True, "content": text,
               "usage": {"input_tokens": 12, "output_tokens": 3}}  # fmt: skip
    encoded = json.dumps(payload, separators=(",", ":"))
    triggers = ("AKIA", "sk-", "eyJ", "earer", "token:", "password:", "ecret", "hf_", "SG.")
    if any(lit in text for lit in triggers):
        return  # these lines name a trigger on purpose; redact itself leaves them alone
    assert not redactor.json_may_change(encoded)
    assert redactor.redact(payload) is payload


def test_json_precheck_is_always_yes_for_kinds_without_literals() -> None:
    assert Redactor(phones=True).json_may_change('{"a":1}')
    assert Redactor({"ticket": r"TCK-\d{6}"}).json_may_change('{"a":1}')
    assert Redactor(extra_literals=['say "hi"']).json_may_change('{"a":1}')  # JSON escapes it
    assert not Redactor(secrets=False).json_may_change('{"password":"x"}')


def test_english_text_does_not_look_like_a_github_token() -> None:
    """Only the token prefixes trigger the scan (``ghp_``...), not every "gh" in a sentence."""
    redactor = Redactor()
    payload = {"content": "High-light night flight through the highlands; tough, thorough."}
    assert not redactor.json_may_change(json.dumps(payload))
    assert redactor.redact(payload) is payload
    assert redactor.redact_text(f"rough {GITHUB_TOKEN}") == "rough [REDACTED:github_token]"


def test_an_equal_string_seen_before_keeps_the_payload_as_is() -> None:
    """Short strings are remembered; meeting an equal (not identical) one changes nothing."""
    redactor = Redactor()
    redactor.redact({"tool": "get_order_details", "tags": ["returned"]})
    again = {"tool": "".join(["get_order", "_details"]), "tags": ["".join(["return", "ed"])]}
    assert redactor.redact(again) is again


def test_the_literals_of_the_built_in_kinds_never_overlap() -> None:
    """No literal a kind needs begins inside another one, so the literal scan takes them in one
    pass (a literal that may, as extra_literals can, turns on a slower scan at every position)."""
    for redactor in (Redactor(), Redactor(emails=True, phones=True, cards=True)):
        assert redactor._need_rx is not None
        assert not redactor._need_rx.pattern.startswith("(?=")
    slow = Redactor(extra_literals=["-abcdef"])  # begins with the end of ``sk-``
    assert slow._need_rx is not None and slow._need_rx.pattern.startswith("(?=")
    assert slow.redact_text("task-abcdef") == "task[REDACTED:secret]"
