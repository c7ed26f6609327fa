"""What a script records about where its output came from: file hashes and library versions."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The file's sha256 as hex, read in 1 MiB chunks (model weights run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions(packages: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Python's version and each package's ("absent" when not installed). A module already imported
    gives its own __version__, which names the running build (torch's "2.8.0+cu128"; the installed
    metadata says "2.8.0"); any other is read from the metadata, so nothing is imported for it
    (importing torch takes seconds)."""
    out = {"python": platform.python_version()}
    for name in packages:
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "__version__", None), str):
            out[name] = module.__version__
            continue
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
