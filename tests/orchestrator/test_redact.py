"""Credentials out of what the service prints and stores: URL passwords masked on the parsed URL (an
unescaped '@' or ':' in a password leaks nothing), job/sweep file text with secret values replaced."""
from __future__ import annotations

import pytest
from faircalib.orchestrator.redact import redact_message, redact_text, redact_url, split_url


@pytest.mark.parametrize("url, masked", [
    ("postgresql://u:Pa:ss@w0rd@host/db", "postgresql://u:***@host/db"),
    ("postgresql+psycopg://fc:s3cret@db:5432/jobs", "postgresql+psycopg://fc:***@db:5432/jobs"),
    ("postgresql://u:p/w@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:p%40ss@host/db", "postgresql://u:***@host/db"),
    ("postgresql://host/db?sslmode=require&password=xyz", "postgresql://host/db?sslmode=require&password=***"),
    ("postgresql://u@host/db", "postgresql://u@host/db"),
    ("sqlite:////tmp/a@b/jobs.db", "sqlite:////tmp/a@b/jobs.db"),
    ("not a url", "not a url"),
])
def test_redact_url(url, masked):
    assert redact_url(url) == masked


def test_split_url_takes_the_last_at_of_the_authority():
    assert split_url("postgresql://u:Pa:ss@w0rd@host:5/db") == ("postgresql", "u:Pa:ss@w0rd", "host:5/db")
    assert split_url("sqlite:///x.db") == ("sqlite", None, "/x.db")
    assert split_url("x") is None


def test_redact_text_masks_secret_values_only():
    text = ("model: zoo:tiny-llada  # my token: abc\nstorage: s3://bucket/x\nauth_token: 'abc def'\n"
            "labels: {team: a, api_key: K1}\nevaluation: {max_tokens: 64, n: 2}\nsecret = x\n"
            "endpoint: http://me:pw@minio:9000\n")
    red, n = redact_text(text)
    assert n == 5
    assert red == ("model: zoo:tiny-llada  # my token: ***\nstorage: s3://bucket/x\nauth_token: '***'\n"
                   "labels: {team: a, api_key: ***}\nevaluation: {max_tokens: 64, n: 2}\nsecret = ***\n"
                   "endpoint: http://me:***@minio:9000\n")
    assert redact_text(red) == (red, 0)  # idempotent


def test_redact_message_keeps_field_names():
    msg = "max_tokens: expected an integer, got 's3://AKIAIOSFODNN7EXAMPLE:pw@b'"
    assert redact_message(msg) == "max_tokens: expected an integer, got 's3://***:***@b'"
