"""What the scripts share. Every script runs by its path (`python scripts/<name>.py`), and Python
puts the script's folder first on sys.path, so scripts import this package and each other by
plain name (`from common.provenance import sha256_file`, `from quantize import verify`) with no
sys.path edits. scripts/README.md lists which older files still carry their own copies and why."""
