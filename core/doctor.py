"""`pond doctor`: checks that a workspace's artifact folder and its database agree.

It reports files no committed row refers to (orphans, such as the files of a
registration whose process was killed before it committed, and unfinished
uploads), stored files whose bytes no longer hash to their name (tampered),
and model versions whose files are missing. It only reads and reports;
deleting an orphan is left to a person, because a file that is seconds old
may belong to a registration still in flight.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import StrEnum

from core import store
from core.store import Workspace, artifacts
from core.store import registry as rows

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class Severity(StrEnum):
    WARNING = "warning"
    ERROR = "error"


class FindingKind(StrEnum):
    ORPHAN_ARTIFACT = "orphan_artifact"
    INCOMPLETE_UPLOAD = "incomplete_upload"
    TAMPERED_ARTIFACT = "tampered_artifact"
    MISSING_FILE = "missing_file"


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    severity: Severity
    message: str
    path: str | None = None
    sha256: str | None = None
    model: str | None = None
    version: int | None = None
    file: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    findings: tuple[Finding, ...]
    artifacts_checked: int
    model_files_checked: int
    hashes_verified: bool

    @property
    def ok(self) -> bool:
        """No errors (orphans are warnings: they waste space but break nothing)."""
        return not any(f.severity is Severity.ERROR for f in self.findings)


def check(ws: Workspace, *, verify_hashes: bool = True) -> DoctorReport:
    """Compare the artifact folder with every row that names an artifact.

    Args:
        verify_hashes: re-hash every referenced file (reads all bytes; off for a quick check).

    Returns:
        The findings, errors first.
    """
    # Read what the database knows, then close before touching (possibly large) files.
    with store.read(ws) as con:
        known = rows.referenced_sha256s(con)
        model_files = rows.all_version_files(con)
    findings: list[Finding] = []
    now = time.time()

    for path in artifacts.stray_files(ws, known):
        age = now - path.stat().st_mtime
        if path.name.startswith(".incoming-"):
            findings.append(Finding(
                FindingKind.INCOMPLETE_UPLOAD, Severity.WARNING,
                f"unfinished upload {path.name} ({age:.0f} s old): a copy was interrupted; "
                "it is safe to delete once no Pond process is writing",
                path=str(path),
            ))
        else:
            findings.append(Finding(
                FindingKind.ORPHAN_ARTIFACT, Severity.WARNING,
                f"artifact {path.name[:12]}… ({path.stat().st_size} bytes, {age:.0f} s old) is "
                "not referenced by any dataset, report or model version, for example because "
                "a registration was interrupted before it committed; it is safe to delete",
                path=str(path), sha256=path.name if _SHA_RE.match(path.name) else None,
            ))

    users_of: dict[str, list[dict]] = {}
    for f in model_files:
        users_of.setdefault(f["sha256"], []).append(f)

    present = [
        p for p in (ws.artifacts_dir.iterdir() if ws.artifacts_dir.exists() else [])
        if p.is_file() and p.name in known
    ]
    if verify_hashes:
        for path in present:
            actual = artifacts.sha256_file(path)
            if actual == path.name:
                continue
            owners = users_of.get(path.name, [])
            if owners:
                for f in owners:
                    findings.append(Finding(
                        FindingKind.TAMPERED_ARTIFACT, Severity.ERROR,
                        f"file '{f['name']}' of model '{f['model_name']}' version {f['version']}"
                        f" was changed on disk (recorded sha256 {path.name[:12]}…, now "
                        f"{actual[:12]}…); loading it is refused until it is restored",
                        path=str(path), sha256=path.name, model=f["model_name"],
                        version=f["version"], file=f["name"],
                    ))
            else:
                findings.append(Finding(
                    FindingKind.TAMPERED_ARTIFACT, Severity.ERROR,
                    f"artifact {path.name[:12]}… was changed on disk (now {actual[:12]}…)",
                    path=str(path), sha256=path.name,
                ))

    for f in model_files:
        path = artifacts.artifact_path(ws, f["sha256"])
        if not path.exists():
            findings.append(Finding(
                FindingKind.MISSING_FILE, Severity.ERROR,
                f"file '{f['name']}' of model '{f['model_name']}' version {f['version']} is "
                f"missing from {ws.artifacts_dir} (sha256 {f['sha256'][:12]}…); restore it from "
                "a backup or archive the version",
                path=str(path), sha256=f["sha256"], model=f["model_name"], version=f["version"],
                file=f["name"],
            ))

    findings.sort(key=lambda f: (f.severity is not Severity.ERROR, f.kind.value, f.path or ""))
    return DoctorReport(tuple(findings), len(present), len(model_files), verify_hashes)
