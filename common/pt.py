"""Read PyTorch `.pt` files without torch: tensors come back as numpy arrays.

    obj = read_pt("best.pt")       # dicts, lists, numbers, strings as pickled; tensors -> np.ndarray
    torch.from_numpy(torch_compatible(array))   # a tensor back to torch, bfloat16 included

A `.pt` file (torch.save since PyTorch 1.6) is a zip archive `<name>/data.pkl` + `<name>/data/<key>`:
the pickle holds the containers and, for each tensor, a call
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`
whose storage is a persistent id `("storage", torch.<Type>Storage, key, location, numel)` naming
the raw little-endian bytes in `data/<key>` (format: PyTorch's torch/serialization.py docs; the
byte order is in `<name>/byteorder`). This reader unpickles with an allow-list: the builtin
containers, collections.OrderedDict, the rebuild functions and storage types below, numpy
scalars and arrays (a checkpoint's saved np.random.get_state(), which torch.load(weights_only=True)
refuses), and pathlib paths (read as text); anything else is refused by name, as
torch.load(weights_only=True) refuses it.
It lets commands that never import torch (jaxbrr's predict, evaluate and training) read torchref
checkpoints, state dicts and brain-go-brr v2 checkpoints.

Tensors keep the dtype they were saved in: a bfloat16 tensor is an ml_dtypes.bfloat16 array (numpy
has none of its own; JAX installs ml_dtypes), so that whoever loads it widens it with a note, as
a float16 one, and says "bfloat16" where the file's dtype is reported.

A file that is not a zip archive is told apart before it is refused, each with its own fix
(`describe`): a zip whose central directory (at its end) is missing, cut short by a copy or
download or still being written; a legacy pickle from torch < 1.6 or
`_use_new_zipfile_serialization=False` (torch re-saves it); anything else is no checkpoint, named
by what it looks like (text, a numpy array, ...).
"""

from __future__ import annotations

import codecs
import collections
import pickle
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

# torch.<Name>Storage -> numpy dtype (BFloat16: raw uint16, viewed as ml_dtypes.bfloat16 on read).
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
    # within its storage, as torch checks: as_strided would read whatever memory lies past it
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=False))
    if offset < 0 or min((*size, *stride), default=0) < 0 or len(size) != len(stride) or (
            0 not in size and last >= len(storage)):
        raise pickle.UnpicklingError(f"a tensor of shape {size}, strides {stride} from element {offset} does not lie "
                                     f"within its storage of {len(storage)} elements: the file is damaged")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    if not size:
        return np.array(storage[offset])  # a 0-d array, as a 0-d tensor
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * itemsize for s in stride])
    return np.array(view)  # a contiguous copy, as torch's tensor owns its storage


def _rebuild_parameter(data: np.ndarray, requires_grad=True, hooks=None) -> np.ndarray:
    return data


def _numpy_scalar(dtype, data: bytes):
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_array(cls, shape, typecode):
    """numpy's _reconstruct, for ndarray only: an empty array that pickle's BUILD then fills from
    its state (shape, dtype, bytes; the items of an object array come through this unpickler's
    own find_class). A checkpoint's np.random.get_state() (brain-go-brr's later rng_state) holds one."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"numpy's _reconstruct of {cls!r}: only plain ndarrays are rebuilt")
    return np.ndarray.__new__(np.ndarray, shape, typecode)


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
            ("numpy", "ndarray"): np.ndarray,
            ("numpy.core.multiarray", "_reconstruct"): _numpy_array,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_array,
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
            if len(raw) < numel * dtype.itemsize:
                raise PtError(f"{self.path}: storage {key} holds {len(raw) // dtype.itemsize} of its {numel} "
                              "elements: the file is truncated or damaged; copy or save it again")
            array = np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))
            if storage_type.name == "BFloat16Storage":
                array = array.view(_bfloat16(self.path))  # the same 16 bits: no widening here
            self.loaded[key] = array
        return self.loaded[key]


def _bfloat16(path: Path) -> np.dtype:
    try:
        import ml_dtypes
    except ImportError:
        raise PtError(f"{path}: holds bfloat16 tensors, which numpy reads through ml_dtypes: "
                      "pip install ml_dtypes (JAX installs it)") from None
    return np.dtype(ml_dtypes.bfloat16)


def torch_compatible(array) -> np.ndarray:
    """`array` as torch.from_numpy takes it, a copy: a bfloat16 one (ml_dtypes', which torch refuses)
    as float32, which holds every bfloat16 exactly; any other in its own dtype."""
    array = np.asarray(array)
    return np.array(array, np.float32 if array.dtype.name == "bfloat16" else array.dtype)


ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local file header: torch.save since 1.6
# torch.save's legacy format pickles this number first (torch/serialization.py MAGIC_NUMBER):
# PROTO n (2 unless told otherwise; a FRAME follows from 4), then LONG1 of its 10 bytes
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
# weights_only=False: brain-go-brr's config holds pathlib Paths, which torch's safe loader refuses
# and torch 2.2 (its pin) has no add_safe_globals to allow; it runs the file's pickle, hence "trust"
RESAVE = ("re-save it with torch, if you trust the file (this runs its pickle): python -c \"import torch; "
          "torch.save(torch.load({path!r}, weights_only=False), 'new.pt')\"")


def describe(head: bytes) -> str:
    """What a file that is neither a zip nor a pickle looks like, from its first bytes."""
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy array (.npy, np.save's)"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (h5py's, Keras's .h5)"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0:
        return "a safetensors file (name it .safetensors)"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # PROTO n
        return "a Python pickle that torch.save did not write (pickle.dump's?)"
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # a character cut at the end
    if all(c.isprintable() or c in "\t\r\n" for c in text):
        first = text.strip().splitlines()[0] if text.strip() else text
        return f"a text file, starting {first[:60]!r}"
    return f"binary data of no kind this reader knows (first bytes {head[:8].hex(' ')})"


def _not_a_zip(path: Path, error: Exception) -> PtError:
    """The error for a file zipfile cannot open, by what its first bytes say it is."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return PtError(f"{path}: cannot be read ({error})")
    if head.startswith(ZIP_MAGIC):
        return PtError(f"{path}: a zip archive whose end, where zip keeps its central directory, is missing "
                       f"(zip: {error}; {path.stat().st_size:,} bytes): the file was cut short by an interrupted "
                       "copy or download, or is still being written; copy or download it again, or wait for "
                       "the save to finish")
    if head[:1] == b"\x80" and LEGACY_MAGIC in head[:24]:
        return PtError(f"{path}: a PyTorch checkpoint in the legacy format (torch < 1.6, or saved with "
                       f"`_use_new_zipfile_serialization=False`), which this reader does not read; "
                       + RESAVE.format(path=str(path)))
    return PtError(f"{path}: not a PyTorch checkpoint: {describe(head)}; point it at the file torch.save wrote "
                   "(.pt, .pth, .ckpt)")


def read_pt(path: str | Path) -> Any:
    """The object torch.save wrote, with every tensor (and Parameter) as a numpy array."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise _not_a_zip(path, error) from None
    with archive:
        try:
            return _read_archive(archive, path)
        except (zipfile.BadZipFile, zlib.error) as error:  # bytes that do not match the archive's CRCs
            raise PtError(f"{path}: damaged ({error}): its bytes were changed after it was written (a copy "
                          "that went wrong, a failing disk); copy it again") from None


def _read_archive(archive: zipfile.ZipFile, path: Path) -> Any:
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise PtError(f"{path}: expected one <name>/data.pkl in the archive, found {pickles}")
    prefix = pickles[0].removesuffix("/data.pkl")
    names = set(archive.namelist())
    order = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
    with archive.open(pickles[0]) as handle:
        try:
            return _Unpickler(handle, archive, prefix, order == "little", path).load()
        except PtError:  # this reader's own, naming the file already
            raise
        # ValueError: numpy's, rebuilding an array from bytes that do not fit its shape
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
            raise PtError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
