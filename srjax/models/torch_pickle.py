"""Read PyTorch checkpoints (``torch.save`` files) without torch, through a restricted unpickler.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. This reader never
imports torch and resolves only an allow-list of names, each to a NumPy stand-in written here:

| name in the pickle | what it becomes |
|---|---|
| ``collections.OrderedDict`` | ``collections.OrderedDict`` |
| ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter`` | a NumPy array builder |
| ``torch.FloatStorage``, ``torch.LongStorage``, ... (typed storages) | a dtype tag |

Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a ``torch.nn`` module class, ...)
raises :class:`UnsafePickleError` before anything is called. Tensor views are bounds-checked against their
storage, so a crafted size/stride cannot read outside the stored bytes, and a tensor may not hold more elements
than its storage (no stride-0 memory bombs).

Both on-disk layouts are read:
  * the zip layout (torch >= 1.6): ``<root>/data.pkl`` plus one ``<root>/data/<key>`` entry per storage;
  * the legacy layout (torch < 1.6): five concatenated pickles (magic number, protocol version, system info,
    the object, the storage keys) followed by each storage as an int64 element count and its raw bytes.

The functions here take bytes or an already-open binary file object; they never open paths themselves. The
weight loaders that read checkpoint files (``srjax.models.efficientnet.load_pretrained`` and
``srjax.models.pretrained.load``) open the file and pass it here.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

__all__ = ['UnsafePickleError', 'load', 'load_state_dict']

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    'DoubleStorage': np.dtype(np.float64),
    'FloatStorage': np.dtype(np.float32),
    'HalfStorage': np.dtype(np.float16),
    'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
    'LongStorage': np.dtype(np.int64),
    'IntStorage': np.dtype(np.int32),
    'ShortStorage': np.dtype(np.int16),
    'CharStorage': np.dtype(np.int8),
    'ByteStorage': np.dtype(np.uint8),
    'BoolStorage': np.dtype(np.bool_),
}


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle names something outside the allow-list (it could run code), or is malformed."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stand-in for ``torch.<Name>Storage``: only carries the element dtype."""
  name: str
  dtype: np.dtype


class _Storage:
  """A flat typed buffer; ``data`` is filled when the bytes are read (after the pickle, in legacy files)."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype = dtype
    self.numel = numel
    self.data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _StorageView:
  """A legacy storage view: ``numel`` elements of ``base`` starting at ``offset``."""
  base: _Storage
  offset: int
  numel: int


class _LazyTensor:
  """A tensor whose storage bytes may not be read yet (legacy layout); see :func:`_materialize`."""

  def __init__(self, storage, offset, size, stride):
    if isinstance(storage, _StorageView):
      offset, storage = offset + storage.offset, storage.base
      # Bounds are checked against the base storage, which contains the view.
    if not isinstance(storage, _Storage):
      raise UnsafePickleError(f'tensor storage must be a persistent storage record, got {type(storage).__name__}')
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset,) + size + stride):
      raise UnsafePickleError(f'tensor offset/size/stride must be ints, got {offset!r}, {size!r}, {stride!r}')
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
      raise UnsafePickleError(f'invalid tensor geometry: offset={offset}, size={size}, stride={stride}')
    if 0 not in size:
      if int(np.prod(size, dtype=object)) > storage.numel:
        raise UnsafePickleError(f'tensor of size {size} has more elements than its storage ({storage.numel}): '
                                f'broadcast (stride-0) tensors are not supported')
      last = offset + sum((n - 1) * s for n, s in zip(size, stride))
      if last >= storage.numel:
        raise UnsafePickleError(
            f'tensor (offset={offset}, size={size}, stride={stride}) reads element {last} of a storage '
            f'with {storage.numel} elements')
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def numpy(self) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise UnsafePickleError('a tensor refers to a storage whose bytes are missing from the file')
    if 0 in self.size:
      return np.zeros(self.size, data.dtype)
    item = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False)
    return np.array(view, order='C')  # a C-contiguous copy that owns its memory


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  del unused  # requires_grad, backward_hooks, metadata: irrelevant for NumPy arrays.
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  del requires_grad, backward_hooks, unused
  if not isinstance(data, _LazyTensor):
    raise UnsafePickleError(f'_rebuild_parameter expects a tensor, got {type(data).__name__}')
  return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}
_ALLOWED.update({('torch', name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the names in ``_ALLOWED``; persistent ids become :class:`_Storage` records."""

  def __init__(self, file: BinaryIO, persistent_load=None):
    super().__init__(file)
    self._persistent = persistent_load

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f'refusing to load global {module}.{name}: only tensors, typed storages and OrderedDict are '
          f'allowed ({", ".join(sorted(f"{m}.{n}" for m, n in _ALLOWED))})') from None

  def persistent_load(self, pid: Any) -> Any:
    if self._persistent is None:
      raise UnsafePickleError(f'unexpected persistent id {pid!r}')
    return self._persistent(pid)


def _restricted_load(f: BinaryIO, persistent_load=None) -> Any:
  try:
    return _RestrictedUnpickler(f, persistent_load).load()
  except UnsafePickleError:
    raise
  except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
          KeyError, struct.error) as e:
    raise UnsafePickleError(f'malformed pickle: {type(e).__name__}: {e}') from e


def _storage_type(value: Any) -> _StorageType:
  if not isinstance(value, _StorageType):
    raise UnsafePickleError(f'storage type must be a torch typed storage, got {value!r}')
  return value


def _check_count(value: Any, what: str) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value < 0:
    raise UnsafePickleError(f'{what} must be a non-negative int, got {value!r}')
  return value


def _materialize(obj: Any) -> Any:
  """Replaces every :class:`_LazyTensor` inside dicts/lists/tuples by its NumPy array."""
  if isinstance(obj, _LazyTensor):
    return obj.numpy()
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialize(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_materialize(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize(v) for v in obj)
  return obj


def _load_legacy(buf: bytes) -> Any:
  f = io.BytesIO(buf)
  magic = _restricted_load(f)
  if magic != _LEGACY_MAGIC:
    raise UnsafePickleError(f'not a PyTorch checkpoint: magic number {magic!r} != {_LEGACY_MAGIC:#x}')
  protocol = _restricted_load(f)
  if protocol != _LEGACY_PROTOCOL:
    raise UnsafePickleError(f'unsupported legacy protocol version {protocol!r} (expected {_LEGACY_PROTOCOL})')
  sys_info = _restricted_load(f)
  little = bool(sys_info.get('little_endian', True)) if isinstance(sys_info, dict) else True

  storages: dict[str, _Storage] = {}

  def persistent_load(pid):
    if not isinstance(pid, tuple) or not pid:
      raise UnsafePickleError(f'malformed persistent id {pid!r}')
    if pid[0] != 'storage':
      raise UnsafePickleError(f'refusing persistent record of kind {pid[0]!r} (only tensor storages are allowed)')
    if len(pid) != 6:
      raise UnsafePickleError(f'malformed storage record {pid!r}')
    _, stype, key, _location, numel, view = pid
    stype = _storage_type(stype)
    numel = _check_count(numel, 'storage size')
    key = str(key)
    if key not in storages:
      storages[key] = _Storage(stype.dtype, numel)
    base = storages[key]
    if view is None:
      return base
    if not (isinstance(view, tuple) and len(view) == 3):
      raise UnsafePickleError(f'malformed storage view {view!r}')
    _view_key, offset, view_size = view
    offset, view_size = _check_count(offset, 'view offset'), _check_count(view_size, 'view size')
    if offset + view_size > base.numel:
      raise UnsafePickleError(f'storage view [{offset}, {offset + view_size}) exceeds {base.numel} elements')
    return _StorageView(base, offset, view_size)

  obj = _restricted_load(f, persistent_load)
  keys = _restricted_load(f)
  if not isinstance(keys, list):
    raise UnsafePickleError(f'storage key list expected after the object, got {type(keys).__name__}')
  for key in keys:
    storage = storages.get(str(key))
    if storage is None:
      raise UnsafePickleError(f'storage key {key!r} was never referenced by the object')
    header = f.read(8)
    if len(header) != 8:
      raise UnsafePickleError(f'file truncated before storage {key!r}')
    (numel,) = struct.unpack('<q' if little else '>q', header)
    if numel != storage.numel:
      raise UnsafePickleError(f'storage {key!r} holds {numel} elements, the object declared {storage.numel}')
    nbytes = numel * storage.dtype.itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
      raise UnsafePickleError(f'file truncated inside storage {key!r} ({len(raw)} of {nbytes} bytes)')
    storage.data = np.frombuffer(raw, storage.dtype.newbyteorder('<' if little else '>')).astype(storage.dtype)
  return _materialize(obj)


def _load_zip(buf: bytes) -> Any:
  with zipfile.ZipFile(io.BytesIO(buf)) as z:
    names = z.namelist()
    pkl = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pkl) != 1:
      raise UnsafePickleError(f'zip checkpoint must hold exactly one <root>/data.pkl, found {pkl}')
    root = pkl[0][:-len('data.pkl')]
    order = root + 'byteorder'
    little = z.read(order).decode().strip() != 'big' if order in names else True
    storages: dict[str, _Storage] = {}

    def persistent_load(pid):
      if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
        raise UnsafePickleError(f'refusing persistent record {pid!r} (only tensor storages are allowed)')
      _, stype, key, _location, numel = pid
      stype = _storage_type(stype)
      numel = _check_count(numel, 'storage size')
      key = str(key)
      if key not in storages:
        name = f'{root}data/{key}'
        if name not in names:
          raise UnsafePickleError(f'storage {key!r} is missing from the archive')
        raw = z.read(name)
        nbytes = numel * stype.dtype.itemsize
        if len(raw) < nbytes:
          raise UnsafePickleError(f'storage {key!r} has {len(raw)} bytes, needs {nbytes}')
        s = _Storage(stype.dtype, numel)
        s.data = np.frombuffer(raw[:nbytes], stype.dtype.newbyteorder('<' if little else '>')).astype(stype.dtype)
        storages[key] = s
      return storages[key]

    with z.open(pkl[0]) as f:
      obj = _restricted_load(io.BytesIO(f.read()), persistent_load)
  return _materialize(obj)


def load(src: bytes | bytearray | memoryview | BinaryIO) -> Any:
  """Unpickles a ``torch.save`` file with every tensor as a NumPy array, refusing anything else.

  Args:
    src: the file's bytes, or a readable binary file object (read to its end).

  Returns:
    The saved object (typically an ``OrderedDict[str, np.ndarray]`` state dict). Tensors become C-contiguous
    NumPy arrays of the stored dtype and shape (PyTorch layout, e.g. OIHW conv kernels).

  Raises:
    UnsafePickleError: the pickle names a global outside the allow-list (nothing it names is called), or the
      file is malformed or truncated.
    TypeError: ``src`` is neither bytes nor a binary file object.
  """
  if isinstance(src, (bytes, bytearray, memoryview)):
    buf = bytes(src)
  elif hasattr(src, 'read'):
    buf = src.read()
    if not isinstance(buf, bytes):
      raise TypeError(f'src must be opened in binary mode; read() returned {type(buf).__name__}')
  else:
    raise TypeError(f'src must be bytes or a binary file object, got {type(src).__name__}')
  if buf[:4] == b'PK\x03\x04':
    return _load_zip(buf)
  return _load_legacy(buf)


def load_state_dict(src: bytes | bytearray | memoryview | BinaryIO) -> dict[str, np.ndarray]:
  """Like :func:`load`, and checks the result is a flat ``{name: array}`` state dict.

  Args:
    src: the file's bytes or a readable binary file object.

  Returns:
    ``dict`` from parameter/buffer name (``'_conv_stem.weight'``, ...) to a NumPy array in PyTorch layout.

  Raises:
    UnsafePickleError: see :func:`load`; also when the object is not a mapping of names to tensors.
  """
  obj = load(src)
  if not isinstance(obj, dict):
    raise UnsafePickleError(f'expected a state dict (a mapping), got {type(obj).__name__}')
  bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
  if bad:
    raise UnsafePickleError(f'state dict entries must map str -> tensor; offending keys: {bad[:5]}')
  return dict(obj)
