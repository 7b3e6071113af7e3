"""Which service key made a hold: proven by the hold id itself, nothing stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

_HEX = frozenset("0123456789abcdef")


class HoldOwners:
    """Hold ids name the service that made them: the first 16 hex digits are random, the
    next 16 a keyed BLAKE2b of them under a secret derived from that service's API key. Only
    that key can commit or release the hold; any other gets 404, as for a hold that does not
    exist, so a key cannot even learn which holds exist. Nothing is stored for it."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        self._secrets = {
            service: hashlib.sha256(b"metering-hold-owner\0" + key).digest()
            for service, key in keys
        }

    def _mac(self, service: str, nonce: str) -> str:
        return hashlib.blake2b(
            nonce.encode(), key=self._secrets[service], digest_size=8
        ).hexdigest()

    def token(self, service: str) -> str:
        nonce = secrets.token_hex(8)
        return nonce + self._mac(service, nonce)

    def owns(self, service: str, hold_id: str) -> bool:
        token = hold_id[:32]
        if len(token) != 32 or not all(c in _HEX for c in token):
            return False
        return hmac.compare_digest(token[16:], self._mac(service, token[:16]))
