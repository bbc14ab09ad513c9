"""Reading PyTorch checkpoint files without PyTorch, and without running code from them.

``torch.save`` writes pickles, and a pickle can name any importable callable. ``load`` reads
them with an allow-list: only the containers and tensor-rebuilding functions a state dict
needs are resolved (each to a NumPy stand-in written here); any other global the file names
is refused with ``UnsafeCheckpointError`` naming it, before anything runs. This is the same
rule as ``torch.load(weights_only=True)``.

Both layouts the published files use are read:

* the zip layout (PyTorch >= 1.6): ``ARCHIVE/data.pkl`` plus one raw little-endian file per
  storage, ``ARCHIVE/data/KEY``;
* the legacy layout (2017-era files, ``_use_new_zipfile_serialization=False``): a magic number,
  the protocol version and system information (three small pickles), the object pickle, the list
  of storage keys, then each storage as an 8-byte element count followed by its bytes.

Tensors come back as NumPy arrays (C order, the tensor's shape and strides honoured).
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # read as uint16 and widened below
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt or not a PyTorch file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint names a global outside the allow-list; nothing from it was run."""


class _StorageType:
    """Stands for ``torch.FloatStorage`` etc. in a pickle: only its name matters."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(np.uint16 if name == "BFloat16Storage" else STORAGE_DTYPES[name])


class _Storage:
    """A storage's raw values as a flat NumPy array (bfloat16 widened to float32)."""

    def __init__(self, storage_type, data):
        values = np.frombuffer(data, dtype=storage_type.dtype.newbyteorder("<"))
        if storage_type.name == "BFloat16Storage":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        self.values = values


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """``torch._utils._rebuild_tensor(_v2)`` for NumPy: a strided view, bounds-checked, copied to C order."""
    values = storage.values
    try:
        offset = int(offset)
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise CheckpointError(f"a tensor with a malformed layout (size {size!r}, stride {stride!r})") from None
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise CheckpointError(f"a tensor with a malformed layout (size {size}, stride {stride}, offset {offset})")
    if not size:
        if offset >= len(values):
            raise CheckpointError(f"a scalar tensor at {offset} beyond its storage of {len(values)} values")
        return np.array(values[offset])
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else offset - 1
    if last >= len(values):
        raise CheckpointError(f"a tensor of size {size} reads past its storage of {len(values)} values")
    if not all(size):
        return np.zeros(size, values.dtype)
    itemsize = values.itemsize
    view = np.lib.stride_tricks.as_strided(values[offset:], shape=size, strides=[st * itemsize for st in stride])
    return np.array(view)


def _rebuild_parameter(tensor, requires_grad=None, backward_hooks=None, *unused):
    return tensor


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_NUMPY_SCALAR_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("numpy", "dtype"): np.dtype,
    **{(module, "scalar"): lambda dtype, data: np.frombuffer(data, dtype)[0] for module in _NUMPY_SCALAR_MODULES},
    **{("torch", name): None for name in STORAGE_DTYPES},  # resolved to _StorageType below
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages, where):
        super().__init__(file, encoding="latin1")  # 2017-era files were written by Python 2
        self.storages = storages  # key -> bytes, or a callable key -> bytes
        self.where = where
        self.cache = {}

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise UnsafeCheckpointError(
                f"{self.where}: refused to load the global {module}.{name}: a weights file has no reason to name "
                "it (only state-dict containers and tensor storages are allowed; nothing was run)"
            )
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"{self.where}: unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.where}: a storage of unknown type or size ({pid[1]!r}, {numel!r})")
        if key not in self.cache:
            data = self.storages(key, storage_type, numel)
            if len(data) != numel * storage_type.dtype.itemsize:
                raise CheckpointError(
                    f"{self.where}: storage {key} holds {len(data)} bytes, expected "
                    f"{numel * storage_type.dtype.itemsize} (truncated file?)"
                )
            self.cache[key] = _Storage(storage_type, data)
        storage = self.cache[key]
        if len(pid) > 5 and pid[5] is not None:  # a legacy view: (view_key, offset, size)
            _, offset, size = pid[5]
            view = _Storage.__new__(_Storage)
            view.values = storage.values[int(offset) : int(offset) + int(size)]
            return view
        return storage


def _load_zip(path, archive):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: a zip file without one data.pkl (found {len(pickles)}): not a torch.save file")
    prefix = pickles[0][: -len("data.pkl")]

    def storage(key, storage_type, numel):
        name = f"{prefix}data/{key}"
        try:
            size = archive.getinfo(name).file_size
        except KeyError:
            raise CheckpointError(f"{path}: storage {key} is missing from the archive (truncated file?)") from None
        if size != numel * storage_type.dtype.itemsize:  # checked before reading: no zip bomb is inflated
            raise CheckpointError(
                f"{path}: storage {key} holds {size} bytes, expected {numel * storage_type.dtype.itemsize}"
            )
        return archive.read(name)

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), storage, path).load()


def _load_legacy(path, data):
    stream = io.BytesIO(data)
    try:
        magic = _SafeHeader(stream).load()
    except Exception:
        magic = None
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{path}: neither a zip nor a legacy torch.save file (no magic number)")
    try:
        _SafeHeader(stream).load()  # protocol version
        _SafeHeader(stream).load()  # system information
        start = stream.tell()
        # The storages' bytes follow the object pickle: a first pass (with zeros) finds where it ends
        # and what each storage holds; the second builds the tensors from the bytes read after it.
        sizes = {}

        def zeros(key, storage_type, numel):
            sizes[key] = (numel, numel * storage_type.dtype.itemsize)
            if sizes[key][1] > len(data):  # never allocate more than the file could hold
                raise CheckpointError(f"{path}: storage {key} claims {sizes[key][1]} bytes, more than the file has")
            return bytes(sizes[key][1])

        _Unpickler(stream, zeros, path).load()
        raw = {}
        for key in _SafeHeader(stream).load():
            key = str(key)
            (count,) = struct.unpack("<q", stream.read(8))
            numel, nbytes = sizes.get(key, (-1, 0))
            chunk = stream.read(nbytes)
            if count != numel or len(chunk) != nbytes:
                raise CheckpointError(f"{path}: storage {key} is cut short or unknown (truncated file?)")
            raw[key] = chunk
        stream.seek(start)
        return _Unpickler(stream, lambda key, storage_type, numel: raw.get(key, b""), path).load()
    except (EOFError, struct.error, pickle.UnpicklingError, IndexError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt legacy torch.save file ({type(err).__name__})") from None


class _SafeHeader(pickle.Unpickler):
    """The legacy header pickles hold only numbers, strings and dicts: no global is allowed at all."""

    def __init__(self, file):
        super().__init__(file, encoding="latin1")

    def find_class(self, module, name):
        raise UnsafeCheckpointError(f"refused to load the global {module}.{name} from a checkpoint header")


def load(path):
    """The object ``torch.save`` wrote to ``path`` (dicts, lists, numbers; tensors as NumPy arrays).

    Raises:
      UnsafeCheckpointError: the file names a global outside the allow-list (nothing was run).
      CheckpointError: a missing, truncated or corrupt file, or not a ``torch.save`` file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({err.strerror or err})") from None
    if not data:
        raise CheckpointError(f"{path}: empty file")
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return _load_zip(path, archive)
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as err:
            raise CheckpointError(f"{path}: truncated or corrupt zip checkpoint ({err})") from None
    return _load_legacy(path, data)
