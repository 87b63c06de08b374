"""Artifacts in GridFS, addressed by SHA-256, verified on the way in and on the way out.

Bytes are hashed while they are stored; an upload whose size or digest does not match
what the caller declared, or whose bytes its flavor refuses (a pickle posing as a model,
a skops file holding an untrusted type, a signed format whose HMAC does not verify), is
aborted and leaves no chunk behind. The ``artifacts`` collection maps a
digest to the one GridFS file that holds it, so identical bytes are stored once.
No file path is ever built from anything a client sends: files are found by id.

With a key ring (``REGISTRY_ARTIFACT_KEYS``) the bytes are stored encrypted, each artifact
under its own data key, wrapped in its ``artifacts`` entry (:mod:`.encryption`); downloads
are authenticated, decrypted and verified against the plaintext's digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bson import ObjectId
from gridfs import AsyncGridFSBucket
from gridfs.errors import GridFSError
from pymongo.asynchronous.database import AsyncDatabase

from services.common.flavors import flavor, verify_upload
from services.common.mongo import Document
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.errors import ArtifactCorrupt, InvalidArgument
from services.registry.store.encryption import KeyRing, RecordOpener, Tampered, UnknownKey, WrappedKey
from services.registry.store.errors import database_call, translated
from services.registry.store.repository import Repository


@dataclass(frozen=True)
class ReceivedArtifact:
    """Bytes received and verified; ``file_id`` is None when they were already stored."""

    sha256: str
    size_bytes: int
    file_id: ObjectId | None
    wrapped_key: WrappedKey | None = None
    """The data key the stored bytes are sealed with (None: stored as they are)."""


@dataclass(frozen=True)
class KeyUsage:
    """How many artifacts each key-encryption key wraps (``None``: stored unencrypted)."""

    by_key_id: dict[str | None, int]


class ArtifactRepository(Repository):
    """The ``artifacts`` collection (digest -> GridFS file) and the GridFS bucket of the same name."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        chunk_bytes: int,
        signing_key: bytes | None,
        keys: KeyRing | None = None,
    ):
        super().__init__(db["artifacts"])
        self._keys = keys
        self._bucket = AsyncGridFSBucket(db, bucket_name="artifacts", chunk_size_bytes=chunk_bytes)
        self._files = db["artifacts.files"]
        self._chunks = db["artifacts.chunks"]
        self._chunk_bytes = chunk_bytes
        self._signing_key = signing_key

    def check_format_allowed(self, artifact_format: str) -> None:
        """Refuse signed (code-executing) flavors before any byte is read when no key can verify them."""
        if flavor(artifact_format).signed and self._signing_key is None:
            raise InvalidArgument(
                f"metadata.artifact.format: {artifact_format} artifacts are refused: the registry has no "
                "artifact signing key (MLOPS_ARTIFACT_SIGNING_KEY) to verify them with",
                field="metadata.artifact.format",
            )

    @database_call
    async def receive(
        self, declared: registry_pb2.Artifact, signature_hmac: str, chunks: AsyncIterator[bytes]
    ) -> ReceivedArtifact:
        """Store ``chunks`` while hashing them, then have the flavor verify the complete bytes;
        refuse and clean up on any mismatch."""
        self.check_format_allowed(declared.format)
        already_stored = await self._collection.find_one({"_id": declared.sha256}, {"_id": 1}) is not None
        digest = hashlib.sha256()
        received: list[bytes] = []
        upload = (
            None
            if already_stored
            else self._bucket.open_upload_stream(declared.sha256, metadata={"sha256": declared.sha256})
        )
        sealer, wrapped = (
            self._keys.seal(declared.sha256, self._chunk_bytes)
            if self._keys is not None and upload is not None
            else (None, None)
        )
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > declared.size_bytes:
                    raise InvalidArgument(
                        f"metadata.artifact.size_bytes: received more than the declared {declared.size_bytes} bytes",
                        field="metadata.artifact.size_bytes",
                    )
                digest.update(chunk)
                received.append(chunk)
                if upload is not None:
                    for record in sealer.add(chunk) if sealer is not None else [chunk]:
                        await upload.write(record)
            if size < declared.size_bytes:
                raise InvalidArgument(
                    f"metadata.artifact.size_bytes: upload truncated: received {size} of "
                    f"{declared.size_bytes} declared bytes",
                    field="metadata.artifact.size_bytes",
                )
            actual = digest.hexdigest()
            if not hmac.compare_digest(actual, declared.sha256):
                raise InvalidArgument(
                    f"metadata.artifact.sha256: digest mismatch: declared {declared.sha256}, received "
                    f"bytes hash to {actual}",
                    field="metadata.artifact.sha256",
                )
            await self._verify(declared.format, b"".join(received), signature_hmac)
            if upload is not None:
                if sealer is not None:
                    await upload.write(sealer.finish())
                await upload.close()
        except BaseException:
            if upload is not None:
                with contextlib.suppress(Exception):
                    await upload.abort()
            raise
        return ReceivedArtifact(declared.sha256, size, upload._id if upload is not None else None, wrapped)

    async def _verify(self, artifact_format: str, data: bytes, signature_hmac: str) -> None:
        """The flavor's verifier, off the event loop (parsing a model takes a while)."""
        await asyncio.to_thread(
            verify_upload, artifact_format, data, signature_hmac=signature_hmac, signing_key=self._signing_key
        )

    @database_call
    async def register(self, received: ReceivedArtifact) -> bool:
        """Index the received file under its digest (bound to the caller's transaction).

        Returns whether the received file is the one indexed; when another upload of the
        same bytes got there first, the caller deletes its own copy after committing.
        """
        existing = await self._collection.find_one({"_id": received.sha256}, session=self.session)
        if existing is not None:
            return False
        if received.file_id is None:
            raise ArtifactCorrupt(f"artifact {received.sha256} was indexed when the upload began and is gone")
        entry: Document = {
            "_id": received.sha256,
            "file_id": received.file_id,
            "size_bytes": received.size_bytes,
            "created_at": datetime.now(UTC),
        }
        if received.wrapped_key is not None:
            entry["encryption"] = received.wrapped_key.to_document()
        await self._collection.insert_one(entry, session=self.session)
        return True

    async def discard(self, received: ReceivedArtifact) -> None:
        """Delete an uploaded file that ended up unused (duplicate, or its version was refused)."""
        if received.file_id is not None:
            with contextlib.suppress(Exception):
                await self._bucket.delete(received.file_id)

    @database_call
    async def sweep_orphans(self, older_than: timedelta) -> int:
        """Delete what uploads interrupted by a crash left behind: chunks without a file, and
        files no digest points at. Only data older than ``older_than`` is touched, so uploads
        in progress are safe. Returns how many files and chunk sets were removed."""
        cutoff = ObjectId.from_datetime(datetime.now(UTC) - older_than)
        indexed = {doc["file_id"] async for doc in self._collection.find({}, {"file_id": 1})}
        removed = 0
        async for doc in self._files.find({"_id": {"$lt": cutoff}}, {"_id": 1}):
            if doc["_id"] not in indexed:
                await self.discard(ReceivedArtifact("", 0, doc["_id"]))
                removed += 1
        files = {doc["_id"] async for doc in self._files.find({}, {"_id": 1})}
        for file_id in await self._chunks.distinct("files_id", {"files_id": {"$lt": cutoff}}):
            if file_id not in files:
                await self._chunks.delete_many({"files_id": file_id})
                removed += 1
        return removed

    async def read(self, sha256: str) -> AsyncIterator[bytes]:
        """The stored bytes in chunks; raises :class:`ArtifactCorrupt` at the end when they no
        longer hash to ``sha256`` (the caller has to drop what it received)."""
        with translated():
            entry = await self._collection.find_one({"_id": sha256})
            if entry is None:
                raise ArtifactCorrupt(f"artifact {sha256} is missing from storage")
            opener = self._opener(entry)
            digest = hashlib.sha256()
            try:
                stream = await self._bucket.open_download_stream(entry["file_id"])
                while True:
                    chunk = await stream.read(opener.sealed_record_bytes if opener else self._chunk_bytes)
                    if not chunk:
                        break
                    if opener is not None:
                        chunk = opener.open(chunk)
                    digest.update(chunk)
                    yield chunk
                if opener is not None and not opener.finished:
                    raise Tampered("truncated: the last record is missing")
            except GridFSError as exc:
                raise ArtifactCorrupt(f"stored artifact {sha256} is damaged ({exc}); refusing it") from None
            except Tampered as exc:
                raise ArtifactCorrupt(f"stored artifact {sha256} is damaged: {exc}; refusing it") from None
        if not hmac.compare_digest(digest.hexdigest(), sha256):
            raise ArtifactCorrupt(
                f"stored artifact {sha256} is corrupt: its bytes hash to {digest.hexdigest()}; refusing it"
            )

    def _opener(self, entry: Document) -> RecordOpener | None:
        """How to open an entry's stored bytes (None: stored as they are)."""
        if "encryption" not in entry:
            return None
        sha256 = entry["_id"]
        if self._keys is None:
            raise ArtifactCorrupt(
                f"artifact {sha256} is stored encrypted and this registry has no REGISTRY_ARTIFACT_KEYS"
            )
        try:
            return self._keys.open(WrappedKey.from_document(entry["encryption"]), sha256)
        except (UnknownKey, Tampered) as exc:
            raise ArtifactCorrupt(f"cannot decrypt stored artifact {sha256}: {exc}") from None

    @database_call
    async def key_usage(self) -> KeyUsage:
        """How many artifacts each key id wraps, for rotation to watch."""
        counts: dict[str | None, int] = {}
        async for entry in self._collection.find({}, {"encryption.key_id": 1}):
            key_id = entry.get("encryption", {}).get("key_id")
            counts[key_id] = counts.get(key_id, 0) + 1
        return KeyUsage(counts)

    @database_call
    async def rewrap(self) -> int:
        """Wrap every artifact's data key by the active key-encryption key (the bytes stay as
        they are); returns how many were re-wrapped. Each entry changes only if it still holds
        the wrapped key that was read, so concurrent rotations do not undo each other; run it
        again until it returns 0. Raises :class:`ArtifactCorrupt` for a key the ring lacks."""
        if self._keys is None:
            raise InvalidArgument(
                "REGISTRY_ARTIFACT_KEYS: no keys to rotate to", field="REGISTRY_ARTIFACT_KEYS"
            )
        rewrapped = 0
        query = {"encryption": {"$exists": True}, "encryption.key_id": {"$ne": self._keys.active}}
        async for entry in self._collection.find(query, {"encryption": 1}):
            wrapped = WrappedKey.from_document(entry["encryption"])
            try:
                renewed = self._keys.rewrap(wrapped, entry["_id"])
            except (UnknownKey, Tampered) as exc:
                raise ArtifactCorrupt(f"cannot re-wrap artifact {entry['_id']}: {exc}") from None
            if renewed is None:
                continue
            result = await self._collection.update_one(
                {"_id": entry["_id"], "encryption.wrapped_key": wrapped.sealed},
                {"$set": {"encryption": renewed.to_document()}},
            )
            rewrapped += result.modified_count
        return rewrapped
