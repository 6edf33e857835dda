"""Write the command reference, docs/cli.md, from samcam's parser (samcam.cli.reference).

    python scripts/cli_reference.py            # rewrite docs/cli.md
    python scripts/cli_reference.py --check    # exit 1 if docs/cli.md is not current
"""

import sys
from pathlib import Path

from samcam.cli import Parser, reference
from samcam.io import atomic_path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

if __name__ == "__main__":
    p = Parser(prog="cli_reference", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that docs/cli.md is current")
    text = reference()
    check = p.parse_args().check
    if (DOC.exists() or DOC.is_symlink()) and (DOC.is_symlink() or not DOC.is_file()):
        kind = "a link" if DOC.is_symlink() else "a folder" if DOC.is_dir() else "not a regular file (a pipe or a device)"
        print(f"cli_reference: error: {DOC}: {kind}, not the reference's file; move it away", file=sys.stderr)
        sys.exit(2)
    if check:
        current = DOC.is_file() and DOC.read_text(encoding="utf-8") == text
        print(f"{DOC.name}: {'current' if current else 'out of date; run python scripts/cli_reference.py'}")
        sys.exit(0 if current else 1)
    try:
        with atomic_path(DOC) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    except (OSError, ValueError) as e:
        print(f"cli_reference: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {DOC}")
