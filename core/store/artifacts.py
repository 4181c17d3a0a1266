"""Content-addressed artifact files: each is named by its sha256.

A file is written under a temporary name in the same folder, flushed to disk,
then renamed, so a reader never sees a half-written artifact. Reading back
re-checks the hash and refuses a file that no longer matches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import NotFound, TamperedArtifact
from core.store.workspace import Workspace

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    sha256: str
    size_bytes: int
    path: Path


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_path(ws: Workspace, sha256: str) -> Path:
    return ws.artifacts_dir / sha256


def put_file(ws: Workspace, src: str | os.PathLike[str], *, move: bool = False) -> Artifact:
    """Store a copy of `src` (or move it, when it already lies in the workspace).

    Returns:
        The artifact, named by the sha256 of its bytes. Storing the same bytes
        twice yields the same artifact.
    """
    ws.artifacts_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=ws.artifacts_dir)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        final = artifact_path(ws, sha)
        os.replace(tmp_name, final)
        if move:
            os.unlink(src)
        return Artifact(sha, size, final)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def put_bytes(ws: Workspace, data: bytes) -> Artifact:
    """Store `data` as an artifact (see `put_file`)."""
    ws.artifacts_dir.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(data).hexdigest()
    final = artifact_path(ws, sha)
    if final.exists() and final.stat().st_size == len(data):
        return Artifact(sha, len(data), final)
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=ws.artifacts_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return Artifact(sha, len(data), final)


def verified_path(ws: Workspace, sha256: str) -> Path:
    """The path of an artifact after re-checking its hash.

    Raises:
        NotFound: the file is missing.
        TamperedArtifact: the file's bytes no longer hash to `sha256`.
    """
    path = artifact_path(ws, sha256)
    if not path.exists():
        raise NotFound(f"artifact {sha256[:12]}… is missing from {ws.artifacts_dir}")
    actual = sha256_file(path)
    if actual != sha256:
        raise TamperedArtifact(
            f"artifact {sha256[:12]}… was changed on disk (its sha256 is now {actual[:12]}…); "
            "restore it from a backup or register the model again"
        )
    return path


def read_bytes(ws: Workspace, sha256: str) -> bytes:
    """The verified bytes of an artifact (see `verified_path`)."""
    return verified_path(ws, sha256).read_bytes()


def copy_out(ws: Workspace, sha256: str, dest: str | os.PathLike[str]) -> Path:
    """Copy a verified artifact to `dest`."""
    src = verified_path(ws, sha256)
    shutil.copyfile(src, dest)
    return Path(dest)


def stray_files(ws: Workspace, known: set[str]) -> list[Path]:
    """Files in the artifact folder that no committed row refers to (for `pond doctor`)."""
    if not ws.artifacts_dir.exists():
        return []
    return sorted(
        p for p in ws.artifacts_dir.iterdir() if p.is_file() and p.name not in known
    )
