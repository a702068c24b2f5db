"""Blobs: text stored once under the hash of its content (a tool result too long for the
journal is kept whole here, and its event names the hash)."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from tether.errors import NotFound
from tether.journal.base import StoreBase


class BlobRows(StoreBase):
    """The blobs table."""

    def put_blob(self, body: str) -> str:
        digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
        blobs = self.t["blobs"]
        with self._tx() as conn:
            exists = conn.execute(sa.select(blobs.c.hash).where(blobs.c.hash == digest)).first()
            if exists is None:
                conn.execute(blobs.insert().values(hash=digest, body=body))
        return digest

    def get_blob(self, digest: str) -> str:
        blobs = self.t["blobs"]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(blobs.c.body).where(blobs.c.hash == digest)).first()
        if row is None:
            raise NotFound(f"blob {digest} not found")
        return str(row[0])
