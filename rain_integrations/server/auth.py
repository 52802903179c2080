"""The API key check, shared by the app and the Ray front's own ``/metrics``."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def key_matches(headers: Iterable[tuple[bytes, bytes]], expected: bytes | None) -> bool:
    """Does ``Authorization: Bearer <key>`` carry ``expected`` (always, without a key)?

    The key is compared as bytes, in constant time: a header with characters
    outside ASCII (or any other malformed one) is a wrong key, never an error
    from comparing strings ``hmac`` will not compare.
    """
    if expected is None:
        return True
    raw = dict(headers).get(b"authorization", b"")
    scheme, _, given = raw.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected)


KEY_MESSAGE = "missing or wrong API key; send the header 'Authorization: Bearer <key>'"
