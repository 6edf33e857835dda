"""Output folders: where a step may write, its provenance record, its lock, its cost record, what is
left to do on a resume. Every step that writes a folder goes through :func:`claim_output`; the
codecs and atomic writes it uses are in :mod:`samcam.io`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from samcam.io import REPO, check_ids, check_input, check_writable, data_root, json_loads, read_input, sha256_file, write_text


@dataclass(frozen=True)
class StepResult:
    """What every step returns, one shape for all (IRN's ``run(args)`` per step): ``out``, the folder
    or checkpoint it wrote; ``done``, the items this call made (images, or epochs/steps of a training);
    ``skipped``, those already there from an earlier run (a resume); ``seconds``, the time this call
    spent on them (a per-image step that loads a model times its images; its cost record keeps the
    wall time). A step with more to say returns a subclass (``MergeResult``, ``training.TrainResult``)."""

    out: Path
    done: int
    skipped: int
    seconds: float

    @property
    def seconds_per_item(self) -> float | None:
        """``seconds / done``; ``None`` when this call did nothing."""
        return self.seconds / self.done if self.done else None

    def line(self, unit: str = "images") -> str:
        """The one-line report a command prints."""
        rate = f", {self.seconds_per_item:.2f} s each" if self.done else ""
        return f"{self.done} {unit} done, {self.skipped} already there{rate} -> {self.out}"


#: the checkout's own folders and files, which no output may be or lie in (results/ and work/ are for outputs)
PROJECT_FOLDERS = ("samcam", "notebooks", "tests", "scripts", "benchmarks", ".ci", ".git", ".venv")
PROJECT_FILES = ("pyproject.toml", "Makefile", "README.md", "ARCHITECTURE.md", "environment.yml", ".gitignore")


#: the folder of ``samcam reproduce``'s stamps and executed notebooks, in a checkout (``samcam demo`` at its
#: default output puts its executed notebook there too): no command's output may lie there
STAMPS = REPO / "results" / "runs"


def project_paths() -> list[Path]:
    """Where samcam's own sources lie: the package it runs from and, in a checkout (a ``pyproject.toml``
    beside the package), :data:`PROJECT_FOLDERS` and :data:`PROJECT_FILES` of that checkout."""
    package = Path(__file__).resolve().parent
    if not (REPO / "pyproject.toml").is_file():
        return [package]
    return [package, *(REPO / name for name in (*PROJECT_FOLDERS, *PROJECT_FILES))]


def check_inputs(*inputs: str | os.PathLike | None) -> None:
    """Refuse an input folder a samcam step is writing now or left unfinished (:func:`check_finished`):
    the one check of every folder a command reads, made where each command names its inputs beside
    its outputs (:func:`check_output`, :func:`check_outputs`; :func:`claim_output` through them), so
    no reader sees part of another step's outputs (a killed merge's labels trained on or scored).
    Files and paths that are not there are left to their readers."""
    for i in inputs:
        if i is not None and os.path.isdir(i):
            check_finished(i)


def check_output(out: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """Refuse an output (file or folder) that is an input or lies inside an input folder (nothing a
    user gave is ever written into or over), that lies inside another step's output folder (one
    holding :data:`RUN_RECORD`), that is or lies in samcam's own sources
    (:func:`project_paths`: a notebook, the package, the configuration) or, in a checkout, in the
    reproduce stamps' folder (:data:`STAMPS`), or whose path runs through a file; and an input folder
    that is unfinished (:func:`check_inputs`)."""
    check_inputs(*inputs)
    o = Path(out).resolve()
    above = next((p for p in o.parents if p.exists() and not p.is_dir()), None)
    if above is not None:  # said now, not after the work whose result could not be written
        raise ValueError(f"output {out}: {above} is a file, not a folder; choose another output path")
    for own in project_paths():
        r = own.resolve()
        if o == r or r in o.parents:
            what = own.name + ("" if own.name in PROJECT_FILES else "/")
            raise ValueError(f"output {out} is or lies in {what}, part of samcam itself; write results elsewhere (results/, work/ or outside the checkout)")
    step = next((p for p in o.parents if (p / RUN_RECORD).is_file()), None)
    if step is not None:  # a step's folder holds its outputs alone: another's would be its foreign files, and its fingerprint change
        raise ValueError(f"output {out} lies inside {step}, a samcam step's output folder (its {RUN_RECORD}); write it elsewhere")
    stamps = STAMPS.resolve()
    if (REPO / "pyproject.toml").is_file() and (o == stamps or stamps in o.parents):
        raise ValueError(f"output {out} is or lies in results/runs/, the reproduce stamps' folder (samcam's own record of its steps); "
                         "write results elsewhere (results/<...>, work/ or outside the checkout)")  # fmt: skip
    for i in inputs:
        if i is None:
            continue
        r = Path(i).resolve()
        if o == r:
            raise ValueError(f"output {out} is the input {i}; choose another output path")
        if r in o.parents:
            raise ValueError(f"output {out} lies inside the input folder {i}; choose another output path")


def check_file_output(out: str | os.PathLike | None, *inputs: str | os.PathLike | None, table: tuple[str, ...] | None = None) -> None:
    """:func:`check_output` for an output that is one file (a record, a table), which is refused as well,
    before any work, where its path names a folder (it ends with a separator) or where something other
    than a regular file stands (a folder, a link, a pipe: what :func:`samcam.io.atomic_path` would refuse
    only when the work is done), or where it could not be written (:func:`samcam.io.check_writable`: a
    read-only folder, a name too long for its temporary). ``None``: no such output.

    ``table``: the output is a CSV table whose header starts with these columns (enough of them to tell
    it from every other table samcam writes). Its path ends with ``.csv``, and a file already there is
    replaced only when it is such a table (:func:`is_table`, one samcam wrote for the same command) or
    empty, never a user's notes, an id list or another kind of table."""
    if out is None:
        return
    text = os.fspath(out)
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise ValueError(f"output {text}: ends with a separator, which names a folder; give a file name")
    path = Path(text)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"output {text}: exists and is {'a link' if path.is_symlink() else 'not a regular file'}; give a file's path")
    check_output(path, *inputs)
    check_writable(path)
    _check_table(text, table)


def _check_table(out: str | os.PathLike | None, table: tuple[str, ...] | None) -> None:
    """:func:`check_file_output`'s rule for a table output (``table``: its header's first columns)."""
    if out is None or table is None:
        return
    path = Path(out)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"output {out}: a table is written as CSV; give a path ending with .csv")
    if path.exists() and path.stat().st_size and not is_table(path, table):
        raise ValueError(f"output {out}: exists and is not a table of this kind (a CSV whose header starts {','.join(table)}), so "
                         "samcam did not write it here; remove it to replace it, or give another path")  # fmt: skip


def table_header(path: str | os.PathLike) -> list[str] | None:
    """The columns of the CSV header at ``path`` (its first line, read within 64 KiB, as UTF-8);
    ``[]`` for an empty file, ``None`` where it cannot be read as text."""
    import csv

    try:
        with open(path, "rb") as f:
            head = f.read(65536)
        line = head.splitlines()[0].decode("utf-8-sig") if head else ""
    except (OSError, UnicodeDecodeError):
        return None
    return next(csv.reader([line]), [])


def is_table(path: str | os.PathLike, columns: Sequence[str]) -> bool:
    """Whether ``path`` holds a CSV table whose header starts with ``columns`` (what a command's
    table output starts with): :func:`table_header`."""
    fields = table_header(path) or []
    return len(columns) > 0 and fields[: len(columns)] == list(columns)


#: the column of a score table naming the network it scored (cam-eval, affinity-sweep): its checkpoint's SHA-256
SCORED_NETWORK = "checkpoint_sha256"


def check_table_target(path: str | os.PathLike | None, checkpoint_sha256: str, what: str) -> None:
    """A score table is replaced only by a table of the same network: ``ValueError`` naming ``path``
    when it holds a table whose :data:`SCORED_NETWORK` names another checkpoint (another classifier's
    sweep had been silently replaced, and ranked by this one's scores). Absent files, and tables made
    before the column, are left to :func:`write_table`'s own check. ``what``: the network, in words."""
    if path is None or not os.path.isfile(path) or SCORED_NETWORK not in (table_header(path) or []):
        return
    from samcam.io import read_csv

    old = {str(v) for v in read_csv(path)[SCORED_NETWORK]}
    if old and old != {checkpoint_sha256}:  # a header alone holds no network's scores
        raise ValueError(f"{path}: holds the scores of another {what} ({SCORED_NETWORK} {sorted(old)[0][:12]}…); "
                         "choose another file, or remove it")  # fmt: skip


def write_table(path: str | os.PathLike, df) -> None:
    """Write the table ``df`` as CSV at ``path`` (atomically), replacing a file there only when it is
    empty or a table of exactly these columns: the header checked before the work starts
    (:func:`is_table`, its first columns) may belong to a user's table that extends samcam's (a
    ``class,iou,...,my_comment`` sheet); ``ValueError`` naming the file, which is left as it was."""
    columns = [str(c) for c in df.columns]
    p = Path(path)
    if p.is_file() and p.stat().st_size > 0:
        if table_header(p) not in (columns, [c for c in columns if c != SCORED_NETWORK]):  # a table made before the column: the same
            raise ValueError(f"{path}: holds a table with other columns than this {len(columns)}-column table "
                             f"({', '.join(columns[:4])}, ...); it is left as it was: choose another file")  # fmt: skip
    write_text(p, df.to_csv(index=False))


def check_folder_output(out: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """:func:`check_output` for an output folder, which is refused as well, before any work, where a
    file (or anything but a folder) stands at its path: a user's file is never taken for the folder."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output {out}: exists and is not a folder; give a folder's path")
    if path.is_symlink() and not path.exists():  # a folder cannot be made where a broken link stands
        raise ValueError(f"output {out}: is a link to {os.readlink(path)}, which does not exist; give a folder's path")
    check_output(path, *inputs)


def check_outputs(outputs: Sequence[str | os.PathLike | None], inputs: Sequence[str | os.PathLike | None],
                  files: Sequence[str | os.PathLike | None] = (), tables: dict | None = None) -> None:  # fmt: skip
    """:func:`check_output` for each of a command's outputs (:func:`check_file_output`, first, for those
    of them that are ``files``: tables, records; ``tables``: a file's table column, for those that are
    tables), and no two of them the same path or one inside another (a table written into the label
    folder it describes, two tables into one file). The inputs are checked (:func:`check_inputs`)
    when no output is given too (eval-seg without ``--json``, ``--csv`` or ``--save-predictions``)."""
    check_inputs(*inputs)
    given = [o for o in outputs if o is not None]
    for f in files:
        check_file_output(f, *inputs)
    for o in given:
        if o not in files:
            check_output(o, *inputs)
    resolved = [(o, Path(o).resolve()) for o in given]
    for k, (a, ra) in enumerate(resolved):
        for b, rb in resolved[k + 1 :]:
            if ra == rb:
                raise ValueError(f"two outputs of one command are the same path ({a} and {b}); give each its own")
            if ra in rb.parents or rb in ra.parents:
                inner, outer = (b, a) if ra in rb.parents else (a, b)
                raise ValueError(f"output {inner} lies inside the output folder {outer}; write it elsewhere")
    for f in files:  # last: a table's path that is also wrong in those ways is named for them
        _check_table(f, (tables or {}).get(f))


def foreign_entries(folder: str | os.PathLike, suffixes: Sequence[str] | None = None, id_folders: bool = False) -> list[str]:
    """What in an output ``folder`` samcam did not write, sorted: anything but its record files, its
    lock, temporaries of a killed run (:func:`is_temporary`) and output files ending in one of ``suffixes``
    (default :data:`OUTPUT_SUFFIXES`), plus folders when the step writes one per id (``id_folders``:
    the official mask layout). A link is never an output, whatever its name (samcam writes regular
    files and folders, and :func:`samcam.io.atomic_path` refuses to replace a link): it is listed as
    ``<name> (a link)``."""
    suffixes = tuple(suffixes or OUTPUT_SUFFIXES)
    out = []
    for p in Path(folder).iterdir():
        if p.name in RECORD_FILES or p.name.endswith(LOCK_FILE) and p.name.startswith(".") or is_temporary(p.name):
            continue  # its lock, or a training's beside its checkpoint (.<name>.samcam.lock: lock_file_output)
        if p.is_symlink():
            out.append(f"{p.name} (a link)")
            continue
        if p.is_dir():
            if not id_folders:
                out.append(p.name + "/")
            continue
        if not (p.is_file() and p.name.endswith(suffixes)):
            out.append(p.name)
    return sorted(out)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary of :func:`samcam.io.atomic_path` (``.<target>.samcam-<random><suffix>.tmp``,
    :data:`samcam.io.TEMPORARY`), being written or left by a killed run; a user's ``.draft.tmp`` is not."""
    from samcam.io import LEGACY_TEMPORARY, TEMPORARY

    return name.endswith(".tmp") and (TEMPORARY.fullmatch(name) is not None or LEGACY_TEMPORARY.fullmatch(name) is not None)


def refuse_foreign(folder: str | os.PathLike, suffixes: Sequence[str] | None = None, id_folders: bool = False) -> None:
    """``ValueError`` naming the folder and up to three of its :func:`foreign_entries`, if any: no
    step writes into a folder holding files it did not write (a user's labels, notes, notebooks)."""
    foreign = foreign_entries(folder, suffixes, id_folders)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ValueError(f"{folder}: holds files samcam did not write ({', '.join(foreign[:3])}{more}); choose another output folder")


RUN_RECORD = "samcam_run.json"
"""The provenance file of every output folder: the step, its inputs (where and what: a path and a
content fingerprint), its parameters, samcam's version."""

LOCK_FILE = ".samcam.lock"
"""Held (``fcntl.flock``) by the one process that writes an output folder."""

STALE_TMP_SECONDS = 600.0
"""A temporary file older than this is left from a killed run (a live one exists for seconds)."""

DATA_VAR = "${SAMCAM_DATA}"
"""How a recorded path under :func:`data_root` begins."""


def record_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` as a record holds it: ``${SAMCAM_DATA}/…`` when it lies under :func:`data_root`,
    else relative to the folder ``base`` that holds the record (``../../masks/x``), so a record reads
    the same from any checkout. The one rule for every path samcam records (:func:`resolve_recorded`
    reads one back)."""
    p = Path(os.path.abspath(path))
    for root in _roots(data_root()):
        if p == root or root in p.parents:
            rel = p.relative_to(root).as_posix()
            return DATA_VAR if rel == "." else f"{DATA_VAR}/{rel}"
    try:  # lexical, so a path through a link of the checkout (.venv) stays inside it
        return Path(os.path.relpath(p, os.path.abspath(base))).as_posix()
    except ValueError:  # another drive (Windows): nothing relative exists
        return str(p)


def read_record(path: str | os.PathLike, kind: str, remedy: str) -> dict:
    """A JSON object a step wrote beside its outputs (a run record); ``ValueError`` naming ``path``,
    the ``kind`` of record and the ``remedy`` when it is unreadable or not an object."""
    try:
        record = json_loads(read_input(path, "record"))
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deeply
        raise ValueError(f"{path}: unreadable {kind} ({e}); {remedy}") from None
    return record


def resolve_recorded(text: str, base: str | os.PathLike) -> Path:
    """The path a :func:`record_path` string names, read from a record in the folder ``base``."""
    if text == DATA_VAR or text.startswith(DATA_VAR + "/"):
        return data_root() / text[len(DATA_VAR) + 1 :]
    return Path(base) / text


def _roots(root: Path) -> list[Path]:
    """``root`` as given (absolute) and resolved (symbolic links followed), each once."""
    return list(dict.fromkeys([Path(os.path.abspath(root)), Path(os.path.realpath(root))]))


def _shared_venv() -> list[tuple[Path, Path]]:
    """``(the running environment, this checkout's .venv)`` when samcam runs from another checkout's
    ``.venv`` (a worktree sharing that checkout's environment): paths inside it are written as this
    checkout's ``.venv``, where a user's own clone keeps its environment, not as a sibling folder."""
    import sys

    prefix = Path(os.path.abspath(sys.prefix))
    if prefix.name != ".venv" or not (prefix.parent / "samcam").is_dir() or prefix.parent in _roots(REPO):
        return []
    return [(p, REPO / ".venv") for p in _roots(prefix)]


_ABSOLUTE = re.compile(r"(?<![\w.+/-])/[^\s'\"`<>|;,)\]}]+")


def relocate_text(text: str, base: str | os.PathLike, checkouts: Sequence[str | os.PathLike] = ()) -> str:
    """``text`` with every absolute path under :func:`data_root`, this checkout (:data:`REPO`, and the
    ``checkouts`` taken as this one: where committed files were made) or the folder beside it (where
    ``../shared/data`` lies) rewritten by :func:`record_path` against ``base``; other text (system
    paths) is unchanged; a shared environment's paths are this checkout's ``.venv``
    (:func:`_shared_venv`). For printed output, parameters and summaries."""
    for c in checkouts:  # "/" would take every absolute path for the checkout's
        a = Path(os.path.abspath(c))
        if len(a.parts) < 2 or a == REPO or a in REPO.parents:
            raise ValueError(f"{c}: not another checkout (a root, this checkout or a folder above it)")
    roots = [(r, r) for r in (*_roots(data_root()), *_roots(REPO))]
    roots += [(Path(os.path.abspath(c)), REPO) for c in checkouts] + _shared_venv()
    roots += [(r, r) for r in _roots(REPO.parent)]
    # the folder beside another checkout is this one's, unless it is a root (a checkout at /app: then every path would be)
    roots += [(a.parent, REPO.parent) for a in map(Path, map(os.path.abspath, checkouts)) if len(a.parent.parts) > 1]

    def one(m: re.Match) -> str:
        p = Path(m.group(0))
        for old, new in roots:
            if p == old or old in p.parents:
                return record_path(new / p.relative_to(old), base) + ("/" if m.group(0).endswith("/") else "")
        return m.group(0)

    return _ABSOLUTE.sub(one, text)


def relocate(value, base: str | os.PathLike, checkouts: Sequence[str | os.PathLike] = ()):
    """A JSON-like ``value`` (dicts, lists, strings, paths, numbers) with :func:`relocate_text`
    applied to each string and path; numbers and keys are unchanged."""
    if isinstance(value, dict):
        return {k: relocate(v, base, checkouts) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relocate(v, base, checkouts) for v in value]
    if isinstance(value, os.PathLike):
        return record_path(value, base)
    if isinstance(value, str):
        return relocate_text(value, base, checkouts)
    return value


COST_RECORD = "samcam_cost.json"
LEGACY_MASK_RECORD = "samcam_masks.json"
"""Where samcam 0.1 kept a mask folder's record; now in :data:`RUN_RECORD`
(:func:`samcam.pipeline.masks.check_run_meta` moves it there)."""

#: bookkeeping files of an output folder: not part of its content when it is another step's input
RECORD_FILES = frozenset({RUN_RECORD, COST_RECORD, LEGACY_MASK_RECORD})


def fingerprint(path: str | os.PathLike | None, leave_out: Sequence[str] = ()) -> str | None:
    """A content fingerprint of an input: the SHA-256 of a file; for a folder, the SHA-256 over the
    sorted ``(relative name, size, SHA-256)`` of its files, all levels down, leaving out hidden files
    (locks, temporaries), :data:`RECORD_FILES` and what lies in ``leave_out`` (relative paths: a
    step's scratch inside its output, such as a cache no clone holds). ``None`` for no input or a
    missing one. Equal contents give equal fingerprints wherever they lie; 10 MB of labels or masks
    take about 0.1 s."""
    import hashlib

    if path is None or not Path(path).exists():
        return None
    p = Path(path)
    if not p.is_dir():
        check_input(p)  # a pipe or a device is refused, not read without end
        return "sha256:" + sha256_file(p)
    h = hashlib.sha256()
    for rel, q in _input_files(p, leave_out):
        check_input(q)
        h.update(f"{rel}\0{q.stat().st_size}\0{sha256_file(q)}\n".encode("utf-8", "surrogateescape"))  # a name need not be UTF-8
    return "sha256:" + h.hexdigest()


def _input_files(folder: Path, leave_out: Sequence[str] = ()) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of the files of an input folder, all levels down, sorted, leaving out hidden
    files (locks, temporaries), :data:`RECORD_FILES` and what lies in ``leave_out``: what
    :func:`fingerprint` and :func:`stat_signature` read. ``ValueError`` naming a broken link among them."""
    skip = [Path(os.path.normpath(x)).parts for x in leave_out]
    for q in sorted(folder.rglob("*")):
        rel = q.relative_to(folder)
        if any(rel.parts[: len(x)] == x for x in skip):
            continue
        if not (q.is_dir() or any(part.startswith(".") for part in rel.parts) or rel.as_posix() in RECORD_FILES):
            if q.is_symlink() and not q.exists():  # its content cannot be read, so neither can the folder's
                raise ValueError(f"{q}: a broken link (to {os.readlink(q)}) inside the input folder {folder}; remove it or point it at a file")
            yield rel.as_posix(), q


def stat_signature(path: str | os.PathLike | None) -> tuple | None:
    """What :func:`fingerprint` reads, by name, size, modification time and inode only (a stat per file:
    cheap enough to take before and after a step), to notice a file replaced or rewritten meanwhile (an
    input while a step read it, an output a notebook step should have written)."""
    if path is None or not Path(path).exists():
        return None
    p = Path(path)
    if not p.is_dir():
        st = p.stat()
        return (st.st_size, st.st_mtime_ns, st.st_ino)
    return tuple((rel, st.st_size, st.st_mtime_ns, st.st_ino) for rel, q in _input_files(p) for st in (q.stat(),))


def fingerprint_files(files: dict[str, str | os.PathLike]) -> str:
    """A content fingerprint of the files a step reads, by their names (an id): the SHA-256 over the
    sorted ``(name, size, SHA-256)``; equal for the same contents wherever the files lie, whatever else
    their folders hold. For a step that reads a chosen few files of a folder (its ids'), where
    :func:`fingerprint` of the whole folder would change with files it never read."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(files):
        q = check_input(files[name])
        h.update(f"{name}\0{q.stat().st_size}\0{sha256_file(q)}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


@contextlib.contextmanager
def _holding(lock: Path, busy: str, remove: bool = False) -> Iterator[None]:
    """Hold the lock file ``lock`` (``fcntl.flock``, released when the block ends or the process dies);
    ``RuntimeError`` ``busy`` at once when another process holds it. ``remove``: the file goes at the end,
    removed while still held (a run that opened it in the microseconds before, and locks it after, is
    the one race left). Without advisory locks (Windows) nothing is guarded."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(busy) from None
        try:
            yield
        finally:
            if remove:
                with contextlib.suppress(OSError):
                    lock.unlink()
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def lock_output(out: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out/.samcam.lock`` (:func:`_holding`) while a step writes ``out``; ``RuntimeError`` at once,
    naming the folder, when another process holds it: two runs never mix their outputs in one folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    with _holding(path, f"{out}: another samcam process is writing this folder ({path} is locked); wait for it or choose another output folder"):
        yield out


@contextlib.contextmanager
def lock_file_output(target: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.<name>.samcam.lock`` beside the file ``target`` (a training's checkpoint, written anew
    after every epoch) while a run writes it, as :func:`lock_output` holds a folder's: a second run
    into the same file is refused at once, naming it (two trainings into one checkpoint had both
    reported success, the file holding one of them). The lock file goes when the run ends, so no
    file is left beside the user's checkpoint."""
    target = Path(target)
    lock = target.parent / f".{target.name}{LOCK_FILE}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with _holding(lock, f"{target}: another samcam process is writing this file ({lock} is locked); wait for it or choose another path", remove=True):
        yield target


def _lock_held(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` (:func:`lock_output`): a shared lock tried
    without waiting, and let go at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return False
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _writing_mark(path: Path) -> dict | None:
    """The mark :func:`claim_output` leaves in a folder's lock file while its step writes (``{"writing":
    step, "pid": ..., "since": ...}``), which only a normal end of the step clears; ``None`` for an
    empty lock file (a finished run, or one of a samcam that left no mark) or anything else."""
    try:
        mark = json.loads(path.read_bytes()[:4096] or b"null")
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) and isinstance(mark.get("writing"), str) else None


def _set_writing_mark(out: Path, step: str | None) -> None:
    """Write (``step``) or clear (``None``) :func:`_writing_mark` in ``out``'s lock file, in place: the
    file is the one this process holds locked (replacing it would let another process lock a new one)."""
    import datetime

    data = b"" if step is None else (json.dumps({"writing": step, "pid": os.getpid(),
                                                 "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}) + "\n").encode()  # fmt: skip
    from samcam.io import naming_output

    with naming_output(out / LOCK_FILE):  # a full disk: the mark's file named, not a bare [Errno 28]
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


@contextlib.contextmanager
def writing_mark(out: str | os.PathLike, step: str) -> Iterator[Path]:
    """Mark ``out`` (whose lock this process holds: :func:`lock_output`) as being written by ``step``
    for the ``with`` block, the mark cleared only when the block ends normally: a killed or failed run
    leaves its folder unfinished for every reader (:func:`check_finished`) until a rerun into it ends.
    What :func:`claim_output` does for every step it claims a folder for, for a step that keeps its
    own record (``masks``)."""
    _set_writing_mark(Path(out), step)
    yield Path(out)
    _set_writing_mark(Path(out), None)


def check_finished(folder: str | os.PathLike) -> None:
    """``ValueError`` naming ``folder`` where a samcam step is writing it now (its lock held by a
    running process: :func:`lock_output`) or a run left it unfinished (killed, or stopped by an error:
    :func:`claim_output`'s mark still in its lock file); a reader of a folder another step writes
    (:func:`samcam.io.folder_ids`, every command's input folders: :func:`check_inputs`) would see only
    part of its outputs.
    A folder without a lock file (not written by samcam) passes."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return
    mark = _writing_mark(path)
    if _lock_held(path):
        step = f"samcam {mark['writing']}" if mark else "a samcam step"
        raise ValueError(f"{folder}: {step} is writing this folder now (a running process holds its {LOCK_FILE}); "
                         "wait for it to end, then read it")  # fmt: skip
    if mark:
        step, since = mark["writing"], f" (started {mark['since']})" if isinstance(mark.get("since"), str) else ""
        raise ValueError(f"{folder}: unfinished: the samcam {step} run writing it{since} stopped before its end, killed or failed; "
                         f"finish it (rerun samcam {step} into this folder: it resumes) or rerun that step into a new folder")  # fmt: skip


#: what a record compares with a rerun's: a rerun that differs in any is refused (paths are not
#: compared: a moved checkout or a copied input with the same content is the same input)
COMPARED = ("step", "fingerprints", "parameters", "samcam_version")


def _refuse_unrecorded(out: Path) -> None:
    """``ValueError`` when ``out`` holds outputs (e.g. a user's labels) but no provenance record."""
    if not (out / RUN_RECORD).exists() and any(p.suffix in OUTPUT_SUFFIXES for p in out.iterdir()):
        raise ValueError(f"{out}: holds outputs without a provenance record ({RUN_RECORD}); choose another output folder")


@contextlib.contextmanager
def claim_output(out: str | os.PathLike, step: str, inputs: dict[str, str | os.PathLike | None], params: dict,
                 notes: dict | None = None) -> Iterator[Path]:  # fmt: skip
    """Make ``out`` the output folder of ``step`` with these ``inputs`` and ``params``, locked
    (:func:`lock_output`) for the ``with`` block in which the step writes it.

    The first run writes ``out/samcam_run.json``: each input's path (:func:`record_path`) and content
    (:func:`fingerprint`), the parameters (paths in them recorded the same way) and samcam's version.
    A later run whose inputs have the same content, with the same parameters and version, resumes
    (wherever the checkout or the inputs now lie); any other is refused (``ValueError`` naming the
    record and what differs: a changed input by name and path), so one folder never mixes outputs of
    two settings or holds outputs of stale inputs. A folder that holds no output yet (a first run that
    failed early) takes the new record. An input the folder's record does not name (one a later
    samcam records, e.g. a step's label source) is added to it as given now, and compared from then on.
    ``notes`` are stored, not compared (what changes an output is a parameter; a parameter an earlier
    record holds as a note is compared as one); a resume adds a note it is given to the record's, and
    refuses one that says otherwise than the record (its outputs were made under the recorded one).
    Temporary files left by a killed run are removed. ``out`` may not be or lie in an input, nor
    an input be a folder another step is writing or left unfinished (:func:`check_finished`).

    While the step writes, the lock file holds a mark naming it (:func:`_writing_mark`), cleared when
    the ``with`` block ends normally: a folder whose run was killed or failed part-way keeps it, and a
    reader refuses the folder (:func:`check_finished`) until a rerun into it ends.
    """
    from samcam import __version__

    out = Path(out)
    check_folder_output(out, *inputs.values())  # the inputs too: none unfinished (check_inputs)
    if out.is_dir():  # before the lock file is made: nothing is written into a folder that is not samcam's
        refuse_foreign(out)
        _refuse_unrecorded(out)
    with lock_output(out):
        stats = {k: stat_signature(v) for k, v in inputs.items()}  # before the fingerprints: a change during them counts too
        record = {"step": step, "samcam_version": __version__,
                  "inputs": {k: (record_path(v, out) if v is not None else None) for k, v in inputs.items()},
                  "fingerprints": {k: fingerprint(v) for k, v in inputs.items()},
                  "parameters": json.loads(json.dumps(relocate(params, out), default=str))}  # fmt: skip
        path = out / RUN_RECORD
        refuse_foreign(out)
        has_outputs = any(p.suffix in OUTPUT_SUFFIXES for p in out.iterdir())
        if path.exists() and has_outputs:
            old = stored = read_record(path, "provenance record", "remove it or choose another output folder")
            if "fingerprints" not in old:
                raise ValueError(f"{path}: a record without input fingerprints (made before samcam recorded them; scripts/relocate_records.py adds them); choose another output folder")
            added = [k for k in record["fingerprints"] if k not in old["fingerprints"]]  # inputs a later samcam records
            changed = [k for k in record["fingerprints"] if k not in added and old["fingerprints"][k] != record["fingerprints"][k]]
            if changed:
                what = ", ".join(f"{k} ({inputs[k]})" for k in changed)
                raise ValueError(f"{path}: the input {what} differs in content from the one this folder's outputs were made from; choose another output folder")
            then = old.get("notes") if isinstance(old.get("notes"), dict) else {}
            if isinstance(old.get("parameters"), dict):  # a setting an earlier samcam stored as a note is compared as one
                old = {**old, "parameters": {**{k: v for k, v in then.items() if k in record["parameters"] and k not in old["parameters"]},
                                             **old["parameters"]}}  # fmt: skip
            diff = [k for k in COMPARED if k != "fingerprints" and old.get(k) != record[k]]
            if diff:
                what = "; ".join(differences(old.get(k), record[k], k) for k in diff)
                raise ValueError(f"{path}: this folder holds outputs made with other settings ({what}); choose another output folder")
            kept = stored
            if added:  # a folder made before samcam recorded these inputs resumes, and records them from now on, as given now
                kept = {**kept, "inputs": {**kept.get("inputs", {}), **{k: record["inputs"][k] for k in added}},
                        "fingerprints": {**kept["fingerprints"], **{k: record["fingerprints"][k] for k in added}}}  # fmt: skip
            clash = next((k for k in (notes or {}) if k in then and then[k] != notes[k]), None)
            if clash is not None:  # the outputs already there were made under the recorded note: a resume does not rewrite their story
                raise ValueError(f"{path}: this folder's outputs are recorded with {clash} {then[clash]!r}, not {notes[clash]!r}; "
                                 "resume with the same note (or none), or choose another output folder")  # fmt: skip
            if notes and {**then, **notes} != then:  # a note given on a resume is kept beside the earlier ones
                kept = {**kept, "notes": {**then, **notes}}
            if kept is not stored:
                write_text(path, json.dumps(kept, indent=1, sort_keys=True) + "\n")
        elif has_outputs:
            _refuse_unrecorded(out)
        else:
            write_text(path, json.dumps({**record, "notes": notes or {}}, indent=1, sort_keys=True) + "\n")
        clean_temporaries(out)
        _set_writing_mark(out, step)  # kept by an exception or a killed process: the folder is unfinished (writing_mark)
        yield out
        moved = [k for k, v in inputs.items() if stat_signature(v) != stats[k] and fingerprint(v) != record["fingerprints"][k]]
        if moved:  # the record fingerprints what the inputs were when the run began (a file only touched, or
            # copied over with the same bytes, is the same input: its content is hashed again to tell)
            what = ", ".join(f"{k} ({inputs[k]})" for k in moved)
            raise ValueError(f"{out}: the input {what} changed while this run read it, so its outputs may mix both versions; "
                             "remove the folder and rerun")  # fmt: skip
        _set_writing_mark(out, None)


def git_commit(path: str | os.PathLike = ".") -> str | None:
    """The checkout's commit, with ``-dirty`` when anything outside ``results/`` differs from it, a new
    file not yet added included (the results a reproduce run is rewriting step by step do not make the
    code that writes them dirty; ignored files such as ``work/`` do not count); ``None`` outside git."""
    import subprocess

    try:
        run = dict(cwd=path, capture_output=True, text=True, timeout=10)
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], **run).stdout.strip()
        if not commit:
            return None
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], **run).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal", "--", top, f":(exclude){top}/results"], **run).stdout
        return commit + ("-dirty" if changes.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _proc_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def machine_info() -> dict:
    """This machine, for every record that names one (cost records, checkpoints, the segmentation
    table, benchmarks): CPU model, the cores this process may use, memory, Python, numpy and
    platform; torch's version, threads and GPU where torch is already imported (a record of a
    torch-free step does not load it)."""
    import platform
    import sys

    import numpy as np

    cpu = next((ln.split(":", 1)[1].strip() for ln in _proc_lines("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor() or platform.machine())  # fmt: skip
    mem = next((ln.split()[1] for ln in _proc_lines("/proc/meminfo") if ln.startswith("MemTotal")), None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": cpu, "cores": cores, "memory_gib": round(int(mem) / 2**20, 1) if mem else None, "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}  # fmt: skip
    torch = sys.modules.get("torch")
    if torch is not None:
        gpu = torch.cuda.is_available()
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), cuda=torch.cuda.get_device_name(0) if gpu else None,
                    cuda_version=torch.version.cuda if gpu else None)  # fmt: skip
    return info


def machine() -> str:
    """This machine in words, for cost records: CPU model and the cores this process may use (:func:`machine_info`)."""
    info = machine_info()
    return f"{info['cpu']}, {info['cores']} cores"


def add_cost(folder: str | os.PathLike, seconds: float, images: int, device: str = "cpu") -> None:
    """Append one run of a step to ``folder/samcam_cost.json``: its seconds, images and device. A
    resumed step adds a run, so the folder's cost (:func:`read_cost`) is the sum of its runs."""
    import datetime

    path = Path(folder) / COST_RECORD
    runs = _cost_runs(path)
    runs.append({"seconds": round(float(seconds), 3), "images": int(images), "device": device, "machine": machine() if device == "cpu" else device,
                 "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})  # fmt: skip
    write_text(path, json.dumps({"runs": runs}, indent=1) + "\n")


def finish_step(out: str | os.PathLike, ids: Sequence[str], todo: Sequence[str], seconds: float, device: str = "cpu") -> StepResult:
    """The end of a per-image step that spent ``seconds`` on the ``todo`` of its ``ids`` that were
    pending: its cost appended to ``out/samcam_cost.json`` (when it did anything) and its result."""
    if todo:
        add_cost(out, seconds, len(todo), device)
    return StepResult(Path(out), len(todo), len(ids) - len(todo), seconds)


def _cost_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        runs = json_loads(read_input(path, "record"))["runs"]
        if not all(isinstance(r, dict) and {"seconds", "images", "machine"} <= set(r) for r in runs):
            raise ValueError("a run lacks seconds, images or machine")
        return runs
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ValueError(f"{path}: unreadable cost record ({e}); remove it to start the record anew") from None


def read_cost(folder: str | os.PathLike) -> dict:
    """The summed cost of ``folder``'s runs: ``seconds``, ``images``, ``seconds_per_image``, the
    ``devices`` (``cpu``, ``cuda:0``) and ``machines``; empty values when the folder has no record."""
    runs = _cost_runs(Path(folder) / COST_RECORD)
    secs, n = sum(r["seconds"] for r in runs), sum(r["images"] for r in runs)
    return {"seconds": secs if runs else None, "images": n, "seconds_per_image": secs / n if n else None,
            "devices": sorted({r.get("device", "cpu") for r in runs}), "machines": sorted({r["machine"] for r in runs})}  # fmt: skip


#: the file kinds the pipeline steps write (an output folder holding any of them is not empty)
OUTPUT_SUFFIXES = (".png", ".npy", ".gz", ".pt")


_ABSENT = object()


_HASH = re.compile(r"(sha256:)?[0-9a-f]{64}")


def differences(old, new, key: str = "") -> str:
    """Where two records differ, down to each field (``parameters.settings.points_per_side: 32 -> 16``;
    with ``key`` empty, the fields of ``old`` and ``new`` themselves: ``config.epochs: 1 -> 2``), never
    a whole mapping; a field one side lacks is shown as ``(absent)``, a SHA-256 by its first 12 digits.
    The one way a refusal names what differs (a folder's record, a training's checkpoint)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted((k for k in set(old) | set(new) if old.get(k, _ABSENT) != new.get(k, _ABSENT)), key=str)
        return ", ".join(differences(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{key}.{k}" if key else str(k)) for k in keys)
    shown = ["(absent)" if v is _ABSENT else repr(v[:-52] + "…") if isinstance(v, str) and _HASH.fullmatch(v) else repr(v) for v in (old, new)]
    return f"{key}: {shown[0]} -> {shown[1]}"


def clean_temporaries(folder: str | os.PathLike, older_than: float = STALE_TMP_SECONDS) -> int:
    """Remove the temporaries of :func:`atomic_path` (:func:`is_temporary`: never a user's own ``.*.tmp``)
    older than ``older_than`` seconds; returns the count."""
    import time

    now, n = time.time(), 0
    for p in Path(folder).glob(".*.tmp"):
        if not is_temporary(p.name) or not p.is_file() or p.is_symlink():
            continue
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > older_than:
                p.unlink()
                n += 1
    return n


def is_complete(path: str | os.PathLike, gzip_limit: int | None = None) -> bool:
    """Whether an output file exists whole: a PNG that passes its checksums, a ``.gz`` that its
    reader takes (:func:`samcam.io.read_gzip`: the stream to its end, nothing after it, inflating to
    at most ``gzip_limit`` bytes, the kind of file's own limit), an ``.npy`` whose data are all
    there, any other file non-empty. A truncated or empty file counts as not done, and so does a link
    (to whatever it points: samcam's outputs are regular files, :func:`foreign_entries`)."""
    path = Path(path)
    if path.is_symlink():
        return False
    try:
        if path.stat().st_size == 0:
            return False
    except OSError:
        return False
    if path.suffix == ".png":
        from samcam.io import png_parts

        try:
            png_parts(path.read_bytes())  # every chunk's CRC and the IEND, as samcam's reader checks them
            with Image.open(path) as im:
                im.load()
            return True
        except (OSError, SyntaxError, UnidentifiedImageError, ValueError):
            return False
    if path.suffix == ".gz":
        from samcam.io import read_gzip

        try:
            read_gzip(path, limit=gzip_limit)
            return True
        except (OSError, ValueError):
            return False
    if path.suffix == ".npy":  # read as samcam reads it: all its data there, nothing after
        from samcam.data.safe_pickle import load_object_npy

        try:
            load_object_npy(path)
            return True
        except (ValueError, OSError, EOFError):
            return False
    return True


def pending(ids: Sequence[str], out: str | os.PathLike, suffix: str = ".png") -> list[str]:
    """The ids whose ``out/<id><suffix>`` is absent or incomplete (:func:`is_complete`), in order."""
    out = Path(out)
    return [i for i in check_ids(ids, f"the ids given for {out}") if not is_complete(out / f"{i}{suffix}")]
