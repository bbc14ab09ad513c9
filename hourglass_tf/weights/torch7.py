"""Reading Torch7 ``.t7`` files (``torch.save`` of Lua Torch) without Lua, and without running code from them.

The binary layout is torch7's ``File.lua`` / ``generic/Tensor.c`` / ``generic/Storage.c``: every value is an
int32 type tag followed by its payload (little-endian, 8-byte "long"):

* 0 nil; 1 number (float64); 2 string (int32 length, bytes); 5 boolean (int32);
* 3 table: int32 reference index (a table already read is referred to by its index alone), int32 pair
  count, then key and value objects;
* 4 Torch object: reference index, the version string ``"V <n>"`` (absent in very old files), the class
  name, then either a tensor / storage payload or, for every other class (``nn.*``, ``nngraph.*``), the
  object's fields as a table;
* 6 / 7 / 8 Lua functions: their dumped bytecode is kept as opaque bytes (``LuaFunction``) and never run.

Tensors (``torch.FloatTensor``, ``torch.CudaTensor``, ...) come back as NumPy arrays in C order (sizes and
strides honoured, 1-based storage offset); every size, count and stride is checked against the bytes the
file holds before anything is allocated, so a truncated or forged file is refused with ``Torch7Error``.
"""

import pathlib
import struct
import sys

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN, FUNCTION, LEGACY_RECUR_FUNCTION, RECUR_FUNCTION = range(9)
MAX_DEPTH = 20_000  # nested objects (an 8-stack nngraph model needs a few thousand)
MAX_DIMS = 16

TENSOR_DTYPES = {
    "Float": np.float32,
    "Double": np.float64,
    "Cuda": np.float32,
    "CudaDouble": np.float64,
    "Long": np.int64,
    "CudaLong": np.int64,
    "Int": np.int32,
    "CudaInt": np.int32,
    "Short": np.int16,
    "CudaShort": np.int16,
    "Char": np.int8,
    "CudaChar": np.int8,
    "Byte": np.uint8,
    "CudaByte": np.uint8,
}


class Torch7Error(ValueError):
    """A ``.t7`` file that is truncated, corrupt or holds something this reader cannot parse."""


class LuaTable:
    """A Lua table: ``pairs`` in file order; ``t[key]`` for string / number keys; ``list()`` for 1..n."""

    def __init__(self):
        self.pairs = []
        self._scalar = {}

    def _add(self, key, value):
        self.pairs.append((key, value))
        if isinstance(key, (str, int, float, bool)):
            self._scalar[key] = value

    def get(self, key, default=None):
        return self._scalar.get(key, default)

    def __getitem__(self, key):
        return self._scalar[key]

    def __contains__(self, key):
        return key in self._scalar

    def list(self):
        """Values at keys 1, 2, ... up to the first missing one."""
        values = []
        while len(values) + 1 in self._scalar:
            values.append(self._scalar[len(values) + 1])
        return values

    def __repr__(self):
        return f"LuaTable({len(self.pairs)} pairs)"


class TorchObject:
    """An instance of a Torch class other than tensors and storages: ``typename`` and its ``fields`` table."""

    def __init__(self, typename, version):
        self.typename = typename
        self.version = version
        self.fields = LuaTable()

    def get(self, key, default=None):
        return self.fields.get(key, default) if isinstance(self.fields, LuaTable) else default

    def __getitem__(self, key):
        return self.fields[key]

    def __contains__(self, key):
        return isinstance(self.fields, LuaTable) and key in self.fields

    def __repr__(self):
        return f"TorchObject({self.typename})"


class LuaFunction:
    """A serialised Lua function: bytecode kept as bytes, never loaded or run."""

    def __init__(self, bytecode):
        self.bytecode = bytecode
        self.upvalues = None


class _Storage:
    def __init__(self, array):
        self.array = array


def is_torch7(head):
    """Whether the first bytes of a file look like a ``torch.save``d Torch object (tag 4, index 1)."""
    return len(head) >= 8 and struct.unpack("<ii", head[:8]) == (TORCH, 1)


class _Reader:
    def __init__(self, data, where):
        self.data = memoryview(data)
        self.where = where
        self.pos = 0
        self.memo = {}
        self.depth = 0

    def fail(self, problem):
        raise Torch7Error(f"{self.where}: {problem} (at byte {self.pos} of {len(self.data)})")

    def take(self, size):
        if size < 0 or self.pos + size > len(self.data):
            self.fail(f"truncated: {size} more bytes needed, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def int32(self):
        return struct.unpack("<i", self.take(4))[0]

    def int64(self):
        return struct.unpack("<q", self.take(8))[0]

    def string(self):
        size = self.int32()
        return bytes(self.take(size)).decode("latin-1")

    def read(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"objects nested more than {MAX_DEPTH} deep")
        try:
            return self._read()
        finally:
            self.depth -= 1

    def _read(self):
        tag = self.int32()
        if tag == NIL:
            return None
        if tag == NUMBER:
            value = struct.unpack("<d", self.take(8))[0]
            return int(value) if value.is_integer() and abs(value) < 2**53 else value
        if tag == STRING:
            return self.string()
        if tag == BOOLEAN:
            return self.int32() != 0
        if tag == FUNCTION:
            function = LuaFunction(bytes(self.take(self.int32())))
            function.upvalues = self.read()
            return function
        if tag not in (TABLE, TORCH, RECUR_FUNCTION, LEGACY_RECUR_FUNCTION):
            self.fail(f"unknown type tag {tag}: not a Torch7 binary file, or a corrupt one")
        index = self.int32()
        if index in self.memo:
            return self.memo[index]
        if tag in (RECUR_FUNCTION, LEGACY_RECUR_FUNCTION):
            function = self.memo[index] = LuaFunction(bytes(self.take(self.int32())))
            function.upvalues = self.read()
            return function
        if tag == TABLE:
            table = self.memo[index] = LuaTable()
            self._fill(table)
            return table
        version = self.string()
        if version.startswith("V "):
            try:
                version_number = int(version[2:])
            except ValueError:
                self.fail(f"bad version string {version!r}")
            typename = self.string()
        else:
            version_number, typename = 0, version
        return self._torch(index, typename, version_number)

    def _fill(self, table):
        count = self.int32()
        if count < 0 or count * 8 > len(self.data) - self.pos:
            self.fail(f"a table claims {count} entries, more than the file could hold")
        for _ in range(count):
            key = self.read()
            table._add(key, self.read())

    def _torch(self, index, typename, version):
        kind = typename[len("torch.") :] if typename.startswith("torch.") else None
        if kind and kind.endswith("Storage") and kind[: -len("Storage")] in TENSOR_DTYPES:
            dtype = np.dtype(TENSOR_DTYPES[kind[: -len("Storage")]])
            size = self.int64()
            if size < 0 or size * dtype.itemsize > len(self.data) - self.pos:
                self.fail(f"a {typename} claims {size} elements, more than the file holds (truncated or forged)")
            storage = self.memo[index] = _Storage(
                np.frombuffer(self.take(size * dtype.itemsize), dtype=dtype.newbyteorder("<"))
            )
            return storage
        if kind and kind.endswith("Tensor") and kind[: -len("Tensor")] in TENSOR_DTYPES:
            dtype = np.dtype(TENSOR_DTYPES[kind[: -len("Tensor")]])
            ndim = self.int32()
            if not 0 <= ndim <= MAX_DIMS:
                self.fail(f"a {typename} claims {ndim} dimensions")
            sizes = [self.int64() for _ in range(ndim)]
            strides = [self.int64() for _ in range(ndim)]
            offset = self.int64() - 1
            self.memo[index] = None  # a tensor cannot contain itself
            storage = self.read()
            array = self._tensor(typename, dtype, sizes, strides, offset, storage)
            self.memo[index] = array
            return array
        if kind and ("Tensor" in kind or "Storage" in kind):
            self.fail(f"{typename} is not supported (half precision and sparse tensors are not read)")
        obj = self.memo[index] = TorchObject(typename, version)
        fields = self.read()
        obj.fields = fields if isinstance(fields, LuaTable) else LuaTable()
        return obj

    def _tensor(self, typename, dtype, sizes, strides, offset, storage):
        if storage is None or not sizes:
            return np.zeros((0,), dtype)
        if not isinstance(storage, _Storage) or storage.array.dtype.itemsize != dtype.itemsize:
            self.fail(f"a {typename} refers to something that is not a storage of its type")
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides) or offset < 0:
            self.fail(f"a {typename} has negative sizes, strides or offset ({sizes}, {strides}, {offset + 1})")
        if 0 in sizes:
            return np.zeros(sizes, dtype)
        last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
        if last >= storage.array.size:
            self.fail(
                f"a {typename} of sizes {sizes} reaches element {last}, beyond its storage of {storage.array.size}"
            )
        base = storage.array[offset:]
        view = np.lib.stride_tricks.as_strided(
            base, shape=sizes, strides=[s * dtype.itemsize for s in strides], writeable=False
        )
        return np.array(view, dtype=dtype.newbyteorder("="))


def load(path):
    """Reads one ``torch.save``d object from a ``.t7`` file (binary mode).

    Returns:
      Python values: None, int / float, str, bool, ``LuaTable``, ``TorchObject``, ``LuaFunction`` (bytes only),
      NumPy arrays for tensors.

    Raises:
      Torch7Error: the file is truncated, corrupt, ASCII-mode, or holds a type this reader does not parse; the
        message names the file and the byte position.
    """
    path = pathlib.Path(path)
    data = path.read_bytes()
    if not is_torch7(data[:8]):
        raise Torch7Error(f"{path}: not a binary Torch7 file (does not start with a Torch object)")
    reader = _Reader(data, str(path))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * MAX_DEPTH + 100))  # scoped: restored below
    try:
        return reader.read()
    finally:
        sys.setrecursionlimit(limit)
