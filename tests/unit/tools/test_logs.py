"""Log redaction and the JSON log format (gateway.observability.logs)."""

from __future__ import annotations

import json
import logging

from gateway.observability.logs import JsonFormatter, Redactor, TextFormatter


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_configured_secrets_and_credential_shapes_are_masked() -> None:
    redact = Redactor(["wJalrXUtnFEMI/K7MDENG", None, ""])
    lines = {
        "key wJalrXUtnFEMI/K7MDENG in a message": "wJalrXUtnFEMI",
        "Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln": "eyJhbGciOi",
        "headers {'Authorization': 'Basic cm9ib3Q6czNjcmV0'}": "cm9ib3Q6czNjcmV0",
        "url https://b.s3.amazonaws.com/x?X-Amz-Security-Token=FwoGZX&X-Amz-Signature=abcd12":
            "FwoGZX",
        '{"password": "hunter2", "user": "bob"}': "hunter2",
        "connecting to redis://:p4ssw0rd@redis:6379/0": "p4ssw0rd",
        "secret_access_key=AbCdEf123": "AbCdEf123",
        # other stores' signed URLs, as a registry's redirect to its CDN names them
        "https://d1.cloudfront.net/x?Expires=1&Signature=Zm9vYmFy&Key-Pair-Id=K2": "Zm9vYmFy",
        "https://s.blob.core.windows.net/x?sv=2021&sig=c2lnbmVk%3D": "c2lnbmVk",
        "https://storage.googleapis.com/x?X-Goog-Signature=a1b2c3d4": "a1b2c3d4",
    }
    for line, secret in lines.items():
        masked = redact(line)
        assert secret not in masked, masked
        assert "***" in masked
    assert redact("user bob pushed team/app:v1") == "user bob pushed team/app:v1"
    assert redact("pulled team/sig:v1, signature:v2") == "pulled team/sig:v1, signature:v2"


def test_json_lines_carry_access_fields_at_the_top_level() -> None:
    formatter = JsonFormatter(Redactor())
    fields = {"request_id": "r1", "status": 201, "bytes_in": 5}
    entry = json.loads(formatter.format(_record("%s", json.dumps(fields), access=fields)))
    assert entry["logger"] == "gateway.x" and entry["level"] == "info"
    assert entry["request_id"] == "r1" and entry["status"] == 201 and "message" not in entry
    plain = json.loads(formatter.format(_record("hello %s", "world")))
    assert plain["message"] == "hello world" and plain["ts"].endswith("Z")


def test_text_lines_are_redacted_too() -> None:
    formatter = TextFormatter(Redactor(["topsecretvalue"]))
    assert "topsecretvalue" not in formatter.format(_record("got %s", "topsecretvalue"))


def test_words_that_only_contain_a_credential_name_are_not_masked() -> None:
    """The htpasswd loader's own warning names a user, not a password."""
    redact = Redactor()
    for line in ("/etc/ecr-gateway/htpasswd: user 'md5user' has no bcrypt hash (use "
                 "htpasswd -B); skipped",
                 "htpasswd: user 'md5user' skipped",
                 "auth.htpasswd_file: /etc/ecr-gateway/htpasswd"):
        assert redact(line) == line


def test_secrets_next_to_such_words_are_still_masked() -> None:
    redact = Redactor()
    lines = {
        "password=hunter2 user=bob": "hunter2",
        "db_password: hunter3": "hunter3",
        "passwd=hunter4": "hunter4",
        "aws_secret_access_key = AbCdEf1234": "AbCdEf1234",
        "AWS_SESSION_TOKEN=FwoGZXIvYXdzE": "FwoGZXIvYXdzE",
        "Authorization: Basic YWxpY2U6czNjcmV0": "YWxpY2U6czNjcmV0",
        "authorization=AWS4-HMAC-SHA256 Credential=AKID/2024": "Credential",
        '{"refresh_token": "r3fr3sh"}': "r3fr3sh",
        # a quote inside a bare value, an escaped quote inside a quoted one
        'password=ab"c0d3 user=bob': "c0d3",
        'upstream said {"password": "hun\\"t3r2"}': "t3r2",
    }
    for line, secret in lines.items():
        masked = redact(line)
        assert secret not in masked and "***" in masked, masked


def test_every_credential_name_and_shape_is_masked_whatever_its_case() -> None:
    """A text holding none of the words the patterns look for is not run through them (most
    of an access line's fields): each name and shape they know must still be found."""
    redact = Redactor()
    names = ["password", "db_password", "secret", "secret_access_key", "authorization",
             "x-amz-security-token", "x-amz-signature", "x-amz-credential", "passwd",
             "session_token", "access_token", "refresh_token", "token", '"token"']
    lines = [f"{variant}=s3cr3tvalue" for name in names
             for variant in (name, name.upper(), name.title())]
    lines += ["BEARER s3cr3tvalue", "basic s3cr3tvalue", "HTTPS://u:s3cr3tvalue@host/x",
              "redis://:s3cr3tvalue@redis:6379"]
    lines += [f"https://cdn/x?a=1{sep}{name}=s3cr3tvalue" for sep in "?&"
              for name in ("Signature", "SIG", "x-goog-signature", "X-Goog-Credential")]
    for line in lines:
        masked = redact(line)
        assert "s3cr3tvalue" not in masked and "***" in masked, (line, masked)


# Secrets as JSON would encode them differently: a quote, a backslash, a newline, non-ASCII.
AWKWARD_SECRETS = ['pa"ss\\word-1', "p\u00e4ssw\u00f6rd-2", "multi\nline-3", "tab\tbed-4"]


def test_json_lines_mask_secrets_that_json_escapes() -> None:
    formatter = JsonFormatter(Redactor(AWKWARD_SECRETS))
    for secret in AWKWARD_SECRETS:
        message = json.loads(formatter.format(_record("upstream said %s!", secret)))["message"]
        assert message == "upstream said ***!", message
        fields = {"request_id": "r1", "path": f"/v2/{secret}/x", "list": [secret]}
        entry = json.loads(formatter.format(_record("%s", json.dumps(fields), access=fields)))
        assert entry["path"] == "/v2/***/x" and entry["list"] == ["***"], entry


def test_json_lines_mask_credential_shapes_after_a_quote_as_text_does() -> None:
    redact = Redactor()
    json_line = JsonFormatter(redact)
    text_line = TextFormatter(redact)
    for message, secret in {'token="abc0123 rest': "abc0123",
                            'Authorization: "Bearer zz0123zz"': "zz0123zz",
                            "password='h\u00fcnter2'": "h\u00fcnter2",
                            'password=a\\b\\c"': "a\\b\\c"}.items():
        entry = json.loads(json_line.format(_record("%s", message)))
        assert secret not in entry["message"] and "***" in entry["message"], entry
        assert secret not in text_line.format(_record("%s", message))


def test_text_access_lines_mask_secrets_that_json_escapes() -> None:
    formatter = TextFormatter(Redactor(AWKWARD_SECRETS))
    for secret in AWKWARD_SECRETS:
        fields = {"request_id": "r1", "path": f"/v2/{secret}/x"}
        line = formatter.format(_record("%s", json.dumps(fields), access=fields))
        assert json.loads(line.split(" ", 4)[4])["path"] == "/v2/***/x", line


def test_text_lines_keep_a_quoted_line_break_or_escape_visible() -> None:
    """An upstream's error text with a line break cannot end the line and forge another."""
    formatter = TextFormatter(Redactor(["multi\nline-secret"]))
    line = formatter.format(_record("upstream said: %s", "no\r\n2026-12-06 ERROR gateway.auth "
                                    "login of admin accepted\x1b[2J\u2028end multi\nline-secret",
                                    request_id="r1"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line, line
    assert "\u2028" not in line and "line-secret" not in line, line
    assert "no\\x0d\\x0a2026-12-06 ERROR" in line and "\\x1b[2J" in line, line
    assert "\\u2028end ***" in line and line.endswith(" request_id=r1"), line
