"""Encryption at rest for stored upstream keys (Fernet, from `cryptography`).

The key comes from PROMPTPROXY_ENCRYPTION_KEY or from a file generated once in the
data directory, so a copied database alone does not give away upstream keys.
"""

from cryptography.fernet import Fernet, InvalidToken

_fernet = None


def init(key):
    global _fernet
    _fernet = Fernet(key)


def encrypt(text):
    return _fernet.encrypt(text.encode()).decode()


def decrypt(token):
    """The stored secret in clear, or "" when it was encrypted with another key."""
    try:
        return _fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        return ""


def new_key():
    return Fernet.generate_key().decode()
