"""Load pickled ``.npy`` files without executing arbitrary code.

IRN's ``cls_labels.npy`` and its CAM files (``{"keys": ..., "high_res": ...}``) are NumPy files of
dtype ``object``: a pickle inside an ``.npy`` header. ``np.load(..., allow_pickle=True)`` would run any
callable such a file names, so a file from the internet could execute code. :func:`load_object_npy`
instead unpickles with :class:`RestrictedUnpickler`, which admits only the handful of globals that
NumPy arrays, NumPy scalars and builtin containers need, and refuses everything else.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

#: (module, name) pairs a NumPy object-array pickle legitimately refers to.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes as codecs.encode(str, "latin1")
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }
)


class UnsafePickleError(ValueError):
    """Raised when a pickle refers to a global outside the admitted list."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only NumPy array/scalar/dtype constructors and safe builtins."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class docstring
        if (module, name) in _ALLOWED_GLOBALS:
            if module == "numpy.core.multiarray":  # old pickles name the pre-2.0 location
                module = "numpy._core.multiarray" if hasattr(np, "_core") else module
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load global {module}.{name}")


def load_object_npy(path: str | os.PathLike) -> Any:
    """Read an ``.npy`` file, unpickling object arrays with :class:`RestrictedUnpickler`.

    Plain numeric ``.npy`` files are read as usual. For a 0-d object array (a pickled ``dict``, as IRN
    writes), the contained object is returned, like ``np.load(path, allow_pickle=True).item()``.
    Raises ``ValueError`` naming the file when it is not an ``.npy`` file or holds a forbidden global.
    """
    from samcam.io import check_input

    path = Path(path)
    try:
        size = check_input(path, ".npy file").stat().st_size
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if not dtype.hasobject:
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared > size - f.tell():  # checked before numpy allocates what the header declares
                    raise ValueError(f"its header declares {shape} {dtype} ({declared} bytes) but it holds {size - f.tell()} bytes of data")
                if declared < size - f.tell():
                    raise ValueError(f"{size - f.tell() - declared} bytes after the {declared} bytes of data its header declares")
                f.seek(0)
                return np.load(f, allow_pickle=False)
            data = f.read()
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npy file ({e})") from e
    stream = io.BytesIO(data)
    try:
        array = RestrictedUnpickler(stream).load()
    except UnsafePickleError as e:
        raise ValueError(f"{path}: {e}; this file is not a plain NumPy/IRN object array") from e
    except Exception as e:  # corrupt pickle stream
        raise ValueError(f"{path}: corrupt pickled .npy content ({e})") from e
    if stream.tell() < len(data):  # np.save writes the pickle and nothing after it
        raise ValueError(f"{path}: {len(data) - stream.tell()} bytes after the end of its pickled content (not the file np.save wrote)")
    if isinstance(array, np.ndarray) and array.shape == () and array.dtype.hasobject:
        return array.item()
    return array
