"""What the shortener accepts: http(s) URLs with a host, and 7-character base62 codes."""
from __future__ import annotations

import ipaddress
import re
import secrets
import string
import unicodedata
from urllib.parse import quote, urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
CODE_ALPHABET = string.digits + string.ascii_letters  # base62
CODE_LENGTH = 7
_CODE_RE = re.compile(r"[0-9A-Za-z]{7}")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_MAX_HOST = 253
# Every printable ASCII character stays as it is (existing %-escapes included);
# only non-ASCII characters are percent-encoded (as UTF-8).
_KEEP = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())


class InvalidURL(ValueError):
    """A URL the shortener refuses; the message says why, for the user."""


def new_code() -> str:
    """A random code: 7 base62 characters (62**7, about 3.5e12 codes)."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def is_code(value: str) -> bool:
    return _CODE_RE.fullmatch(value) is not None


def normalize_url(value: object) -> str:
    """``value`` as a safe absolute http(s) URL in ASCII, or InvalidURL saying what is wrong.

    The host is IDNA-encoded and non-ASCII characters elsewhere percent-encoded,
    so the result can go into a Location header as it is.
    """
    if not isinstance(value, str):
        raise InvalidURL("url must be a string")
    url = value.strip()
    if not url:
        raise InvalidURL("url is empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in url):
        raise InvalidURL("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"url cannot be parsed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidURL("only http:// and https:// URLs can be shortened")
    host = parts.hostname
    if not host:
        raise InvalidURL("url has no host")
    if port == 0:
        raise InvalidURL("url has port 0")
    netloc = _ascii_host(host, bracketed="[" in parts.netloc)
    if port is not None:
        netloc += f":{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = quote(userinfo, safe=_KEEP) + "@" + netloc
    result = urlunsplit((
        parts.scheme.lower(), netloc, quote(parts.path, safe=_KEEP),
        quote(parts.query, safe=_KEEP), quote(parts.fragment, safe=_KEEP),
    ))
    if len(result) > MAX_URL_LENGTH:
        raise InvalidURL(f"url is longer than {MAX_URL_LENGTH} characters once its non-ASCII "
                         "characters are percent-encoded")
    return result


def _ascii_host(host: str, bracketed: bool) -> str:
    if bracketed:
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise InvalidURL(f"url has an invalid IPv6 address {host!r}") from None
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidURL(f"url has an invalid host name {host!r}") from None
    if len(ascii_host) > _MAX_HOST or not _HOSTNAME_RE.fullmatch(ascii_host):
        raise InvalidURL(f"url has an invalid host name {host!r}")
    return ascii_host
