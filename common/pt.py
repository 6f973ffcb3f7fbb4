"""Read PyTorch `.pt` files without torch: tensors come back as numpy arrays.

    obj = read_pt("best.pt")       # dicts, lists, numbers, strings as pickled; tensors -> np.ndarray

A `.pt` file (torch.save since PyTorch 1.6) is a zip archive `<name>/data.pkl` + `<name>/data/<key>`:
the pickle holds the containers and, for each tensor, a call
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`
whose storage is a persistent id `("storage", torch.<Type>Storage, key, location, numel)` naming
the raw little-endian bytes in `data/<key>` (format: PyTorch's torch/serialization.py docs; the
byte order is in `<name>/byteorder`). This reader unpickles with an allow-list: the builtin
containers, collections.OrderedDict, the rebuild functions and storage types below, numpy
scalars, and pathlib paths (read as text); anything else is refused by name (the same stance as
torch.load(weights_only=True)).
It lets commands that never import torch (jaxbrr's predict, evaluate and training) read torchref
checkpoints, state dicts and brain-go-brr v2 checkpoints.
"""

from __future__ import annotations

import codecs
import collections
import pickle
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

# torch.<Name>Storage -> numpy dtype (BFloat16: raw uint16, widened to float32 on read).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class PtError(ValueError):
    """A `.pt` file this reader cannot read; the message names the file and why."""


class _Storage:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> np.ndarray:
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])  # a 0-d array, as a 0-d tensor
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.array(view)  # a contiguous copy, as torch's tensor owns its storage


def _rebuild_parameter(data: np.ndarray, requires_grad=True, hooks=None) -> np.ndarray:
    return data


def _numpy_scalar(dtype, data: bytes):
    return np.frombuffer(data, dtype=dtype)[0]


def _path_text(flavour):
    """A pickled pathlib path, rebuilt from its parts as text (a Windows path too, on any system):
    brain-go-brr v2 saves its config's model_dump(), whose data_dir, cache_dir and output_dir are
    Path objects."""
    return lambda *parts: str(flavour(*parts))


# pathlib's classes as pickled (`pathlib` to Python 3.12, `pathlib._local` from 3.13)
_PATHS = {(module, name): _path_text(PureWindowsPath if "Windows" in name else PurePosixPath)
          for module in ("pathlib", "pathlib._local")
          for name in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")}


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle, archive: zipfile.ZipFile, prefix: str, little: bool, path: Path):
        super().__init__(handle)
        self.archive, self.prefix, self.little, self.path = archive, prefix, little, path
        self.loaded: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,
            ("numpy", "dtype"): np.dtype,
            ("builtins", "set"): set,
            ("_codecs", "encode"): codecs.encode,  # protocol 2 pickles bytes (a numpy scalar's) this way
        }
        if (module, name) in allowed:
            return allowed[module, name]
        if (module, name) in _PATHS:
            return _PATHS[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _Storage(name)
        raise PtError(f"{self.path}: holds a pickled {module}.{name}, which this reader does not "
                      "rebuild (only tensors, containers and numbers); re-save it without that object, e.g. "
                      "the state dict alone, or a batch's tensors alone")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _Storage):
            raise PtError(f"{self.path}: unknown persistent id {pid!r}")
        if key not in self.loaded:
            dtype = np.dtype(STORAGE_DTYPES[storage_type.name]).newbyteorder("<" if self.little else ">")
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            array = np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))
            if storage_type.name == "BFloat16Storage":  # bf16 is the top half of a float32
                array = (array.astype(np.uint32) << 16).view(np.float32)
            self.loaded[key] = array
        return self.loaded[key]


def read_pt(path: str | Path) -> Any:
    """The object torch.save wrote, with every tensor (and Parameter) as a numpy array."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise PtError(f"{path}: not a PyTorch zip checkpoint ({error}); a file from torch < 1.6 or saved with "
                      "`_use_new_zipfile_serialization=False` is read after re-saving it with torch: "
                      f"torch.save(torch.load('{path}', weights_only=True), 'new.pt')") from None
    with archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise PtError(f"{path}: expected one <name>/data.pkl in the archive, found {pickles}")
        prefix = pickles[0].removesuffix("/data.pkl")
        names = set(archive.namelist())
        order = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
        with archive.open(pickles[0]) as handle:
            try:
                return _Unpickler(handle, archive, prefix, order == "little", path).load()
            except (pickle.UnpicklingError, EOFError, KeyError) as error:
                raise PtError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
