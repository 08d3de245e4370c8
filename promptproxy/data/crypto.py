"""Encryption at rest for stored upstream keys (Fernet, from `cryptography`), and
the keyed hash that stores gateway keys.

The encryption key comes from PROMPTPROXY_ENCRYPTION_KEY or from a file generated
once in the data directory, so a copied database alone does not give away upstream
keys. It may list several keys, comma-separated, to rotate: the first encrypts,
all of them decrypt (`python app.py encryption rotate` re-encrypts with the first).

Gateway keys are stored as an HMAC-SHA256 keyed with a key derived from the
server's secret (PROMPTPROXY_SECRET_KEY), so a leaked database alone does not let
anyone test guesses against them.
"""

import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_fernet = None
_digest_key = None

DIGEST_PURPOSE = b"promptproxy gateway key digests v1"  # not the session-signing use of the secret


class CannotDecrypt(Exception):
    """A stored secret encrypted with a key that is no longer configured."""


def init(key, secret):
    """Set the encryption key(s), comma-separated, and the server secret for key digests."""
    global _fernet, _digest_key
    _fernet = MultiFernet([Fernet(part.strip()) for part in key.split(",") if part.strip()])
    _digest_key = hmac.new(secret.encode(), DIGEST_PURPOSE, hashlib.sha256).digest()


def encrypt(text):
    return _fernet.encrypt(text.encode()).decode()


def decrypt_stored(token):
    """A stored secret in clear; CannotDecrypt when no configured key opens it."""
    try:
        return _fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        raise CannotDecrypt() from None


def decrypt(token):
    """A short-lived value (one kept in a session cookie) in clear, or "" when it
    cannot be opened: the value is then simply gone."""
    try:
        return decrypt_stored(token)
    except CannotDecrypt:
        return ""


def digest(key):
    """How a gateway key is stored: HMAC-SHA256 under the server's derived key."""
    return hmac.new(_digest_key, key.encode(), hashlib.sha256).hexdigest()


def new_key():
    return Fernet.generate_key().decode()
