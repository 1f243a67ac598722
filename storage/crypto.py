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
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in keys])
        self._pseudonym_key = hashlib.sha256(b"portineria-pseudonym:" + keys[-1].encode()).digest()

    def encrypt(self, text: str) -> bytes:
        return self._fernet.encrypt(text.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        return self._fernet.decrypt(token).decode("utf-8")

    def encrypt_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt_bytes(self, token: bytes) -> bytes:
        return self._fernet.decrypt(token)

    def pseudonym(self, value: str) -> str:
        """A stable keyed hash, so records can name a person without holding the id.

        Keyed with the oldest key so that rotating in a new key keeps references stable.
        """
        return hmac.new(self._pseudonym_key, value.encode("utf-8"), hashlib.sha256).hexdigest()
