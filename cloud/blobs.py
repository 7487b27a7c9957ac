"""A content-addressed file store: the bytes of photos (a technician's, a camera's evidence) kept
under ``{data_dir}/blobs/{sha[:2]}/{sha}``, named by their SHA-256.

- **Write once.** A blob is written to a temporary file in the same folder, fsynced, renamed into
  place (atomic on POSIX), and the folder fsynced: a crash leaves either the whole file or none, and
  a reader never sees half of one. Writing bytes that are already there changes nothing.
- **Bounded.** ``put`` refuses more than ``max_bytes`` (413) before touching the disk.
- **Photos are what they claim.** ``sniff_image`` tells JPEG, PNG and WebP apart by their magic
  bytes; anything else (a PDF, an HTML page, a script named photo.jpg) is refused (415), so what
  the console later serves as ``image/*`` is an image.

The database row that points at a blob (``alert_photos``) is written by the caller; a blob whose
row was rolled back is an orphan on disk, harmless (the same bytes reuse it) and small.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cloud.config import CloudConfig, data_dir
from cloud.kit.errors import InvalidInput, NotFound

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")

JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"


class TooLarge(InvalidInput):
    status_code = 413
    code = "too_large"


class UnsupportedType(InvalidInput):
    status_code = 415
    code = "unsupported_media_type"


@dataclass(frozen=True, slots=True)
class Blob:
    sha256: str
    size: int


def sniff_image(data: bytes) -> str | None:
    """The image type of ``data`` by its first bytes (JPEG, PNG or WebP), else None."""
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def image_type(data: bytes, field: str = "file") -> str:
    """The type of an uploaded photo, checked by its bytes (what the client said is not trusted);
    UnsupportedType (415) naming ``field`` for anything but JPEG, PNG or WebP."""
    if not data:
        raise InvalidInput(f"{field}: the file is empty")
    kind = sniff_image(data)
    if kind is None:
        raise UnsupportedType(f"{field}: not a JPEG, PNG or WebP image (only photos can be attached)")
    return kind


class BlobStore:
    """The store under ``root`` (normally ``data_dir/blobs``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, config: CloudConfig) -> BlobStore:
        return cls(data_dir(config) / "blobs")

    def path(self, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256):
            raise NotFound(f"blob {sha256[:80]!r}: not a SHA-256")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Blob:
        """Store ``data`` (once) and return its address. TooLarge above ``max_bytes``."""
        if len(data) > max_bytes:
            raise TooLarge(f"file: {len(data)} bytes is more than the {max_bytes} allowed")
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.is_file() and target.stat().st_size == len(data):
            return Blob(sha, len(data))  # content-addressed: the same name is the same bytes
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{sha}.{secrets.token_hex(6)}.tmp"
        try:
            with temporary.open("xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        _fsync_dir(folder)
        return Blob(sha, len(data))

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; NotFound if there are none."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {sha256}: not stored") from None


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (the directory entry), where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
