"""What a script records about where its output came from: file hashes and library versions."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The file's sha256 as hex, read in 1 MiB chunks (model weights run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions(packages: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Python's version and each installed distribution's ("absent" when not installed), read from
    the installed metadata, so no package is imported (importing torch takes seconds)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
