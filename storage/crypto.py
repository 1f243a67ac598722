"""Encryption at rest for message bodies, payloads, evidence and media files."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["BodyCipher", "InvalidToken", "generate_key"]


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class BodyCipher:
    """MultiFernet over the configured keys: the first encrypts, all decrypt.

    Rotation: put a new key first; new data is encrypted with it while everything
    stored earlier keeps decrypting with the older keys, which stay in the list
    (the consent ledger is append-only, so its evidence is never re-encrypted).
    The oldest key stays last in the list for good: it also keys the hashes that tie
    ledger rows to their person and recognise deliveries already processed.
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in keys])
        # Keyed with the oldest key, so that rotating in a new key keeps every hash stable;
        # one key per use, so a hash made for one purpose never matches another's.
        self._pseudonym_key = _derived_key(b"portineria-pseudonym:", keys[-1])
        self._message_sid_key = _derived_key(b"portineria-message-sid:", keys[-1])

    def encrypt(self, text: str) -> bytes:
        return self._fernet.encrypt(text.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        return self._fernet.decrypt(token).decode("utf-8")

    def encrypt_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt_bytes(self, token: bytes) -> bytes:
        return self._fernet.decrypt(token)

    def pseudonym(self, value: str) -> str:
        """A stable keyed hash, so records can name a person without holding the id."""
        return _keyed_hash(self._pseudonym_key, value)

    def message_sid_ref(self, message_sid: str) -> str:
        """A stable keyed hash of a provider's MessageSid: recognises a delivery seen
        before (a replay) once the message itself is gone, without keeping its SID."""
        return _keyed_hash(self._message_sid_key, message_sid)


def _derived_key(purpose: bytes, key: str) -> bytes:
    return hashlib.sha256(purpose + key.encode()).digest()


def _keyed_hash(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
