"""Keeping credentials out of what the service prints and stores.

- `split_url(url)`: a URL's scheme, userinfo and the rest, read the way a person writes it: the userinfo
  ends at the LAST "@" of the authority, so an unescaped "@" or ":" inside a password stays part of the
  password (`postgresql://u:Pa:ss@w0rd@host/db` is user `u`, password `Pa:ss@w0rd`, host `host`).
- `redact_url(url)`: the URL with its password (and any password-like query parameter) replaced by
  `***`, built from that split, so no part of a password survives.
- `redact_text(text)`: a job or sweep file as it may be stored: URLs redacted as above, values of
  secret-looking keys (`password:`, `aws_secret_access_key =`, `auth_token:` ...) and AWS access key ids
  replaced by `***`. Returns the text and how many values it replaced.

Boundary: pure string work; no I/O.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
_SECRET_KEY = re.compile(r"(?:^|[_.\-])(?:secret|password|passwd|pwd|token|credentials?|api_?key|access_?key(?:_?id)?|"
                         r"secret_?key|private_?key|session_?token|auth)$", re.IGNORECASE)
_URL_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_KEY_VALUE = re.compile(r"(?P<key>[\"']?(?P<name>[A-Za-z_][\w.\-]*)[\"']?)(?P<sep>\s*[:=]\s*)"
                        r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,{}\[\]#]+)")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")


def is_secret_key(name: str) -> bool:
    """A key name that holds a credential (`password`, `db_password`, `aws_secret_access_key`, ...)."""
    return bool(_SECRET_KEY.search(name.strip().strip("\"'")))


def split_url(url: str) -> tuple[str, str | None, str] | None:
    """(scheme, userinfo or None, rest after the userinfo) of a `scheme://...` URL; None for other text.
    An empty authority (`sqlite:///path`) has no userinfo."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return None
    if rest.startswith("/") or "@" not in rest:
        return scheme, None, rest
    at = rest.rfind("@")
    return scheme, rest[:at], rest[at + 1:]


def userinfo_parts(userinfo: str) -> tuple[str, str | None]:
    """(username, password or None), percent-decoded; the password is everything after the first ':'."""
    user, colon, password = userinfo.partition(":")
    return unquote(user), (unquote(password) if colon else None)


def _redact_query(rest: str) -> str:
    head, q, query = rest.partition("?")
    if not q:
        return rest
    parts = []
    for item in query.split("&"):
        k, eq, _v = item.partition("=")
        parts.append(f"{k}={MASK}" if eq and is_secret_key(unquote(k)) else item)
    return f"{head}?{'&'.join(parts)}"


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***; text that is not a URL is returned unchanged."""
    parts = split_url(url)
    if parts is None:
        return url
    scheme, userinfo, rest = parts
    rest = _redact_query(rest)
    if userinfo is None:
        return f"{scheme}://{rest}"
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':' + MASK if colon else ''}@{rest}"


def redact_urls_in(text: str) -> str:
    """Every URL inside free text (an error message, a reason) with its password masked."""
    return _URL_TOKEN.sub(lambda m: redact_url(m.group(0)), text)


def redact_message(text: str) -> str:
    """An error message or reason with URL passwords and AWS access key ids masked (keys are left alone:
    a message names fields such as `max_tokens` that are not secrets)."""
    return _AWS_KEY_ID.sub(MASK, redact_urls_in(text))


def redact_text(text: str) -> tuple[str, int]:
    """(text with credentials replaced by ***, number of values replaced)."""
    count = 0

    def url(m: re.Match) -> str:
        nonlocal count
        new = redact_url(m.group(0))
        count += new != m.group(0)
        return new

    def key_value(m: re.Match) -> str:
        nonlocal count
        if not is_secret_key(m.group("name")) or m.group("value").strip("\"'") in ("", MASK):
            return m.group(0)
        count += 1
        value = m.group("value")
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{m.group('key')}{m.group('sep')}{quote}{MASK}{quote}"

    def aws_key(_m: re.Match) -> str:
        nonlocal count
        count += 1
        return MASK

    out = _URL_TOKEN.sub(url, text)
    out = _KEY_VALUE.sub(key_value, out)
    out = _AWS_KEY_ID.sub(aws_key, out)
    return out, count
