"""Tests for srjax.models.torch_pickle: hostile pickles raise without side effects; hand-assembled checkpoints
in both PyTorch layouts (built here from the format, not by the reader) read back exactly."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np
import pytest

from srjax.models import efficientnet, torch_pickle


# --- a tiny pickle assembler (protocol 2 opcodes), so the test writes the format independently -------------

def _u(s: str) -> bytes:  # BINUNICODE
  b = s.encode()
  return b'X' + struct.pack('<I', len(b)) + b


def _int(v: int) -> bytes:  # BININT
  return b'J' + struct.pack('<i', v)


def _tuple(*items: bytes) -> bytes:
  return b'(' + b''.join(items) + b't'


def _global(module: str, name: str) -> bytes:
  return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _tensor(storage_pid: bytes, offset: int, size, stride) -> bytes:
  return (_global('torch._utils', '_rebuild_tensor_v2') +
          _tuple(storage_pid + b'Q', _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)),
                 b'\x89', _global('collections', 'OrderedDict') + b')R') + b'R')


def _state_dict(entries: list[tuple[str, bytes]]) -> bytes:
  body = b''.join(_u(k) + v for k, v in entries)
  return b'\x80\x02' + _global('collections', 'OrderedDict') + b')R(' + body + b'u.'


def _legacy_file(obj_pickle: bytes, storages: list[tuple[str, np.ndarray]]) -> bytes:
  head = (pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + pickle.dumps(1001, protocol=2) +
          pickle.dumps({'protocol_version': 1001, 'little_endian': True,
                        'type_sizes': {'short': 2, 'int': 4, 'long': 4}}, protocol=2))
  tail = pickle.dumps([k for k, _ in storages], protocol=2)
  for _, arr in storages:
    tail += struct.pack('<q', arr.size) + arr.astype('<f4').tobytes()
  return head + obj_pickle + tail


def _legacy_pid(key: str, numel: int, stype: str = 'FloatStorage') -> bytes:
  return _tuple(_u('storage'), _global('torch', stype), _u(key), _u('cpu'), _int(numel), b'N')


# A 2x3 weight stored transposed (a non-contiguous view) at offset 2 of storage '7', and a bias in storage '9'.
_W_STORE = np.arange(10, dtype=np.float32) * 0.5
_B_STORE = np.array([3.0, -1.0], np.float32)
_W_EXPECTED = np.array([[_W_STORE[2 + 0], _W_STORE[2 + 2], _W_STORE[2 + 4]],
                        [_W_STORE[2 + 1], _W_STORE[2 + 3], _W_STORE[2 + 5]]])


def _legacy_checkpoint() -> bytes:
  obj = _state_dict([('lin.weight', _tensor(_legacy_pid('7', 10), 2, (2, 3), (1, 2))),
                     ('lin.bias', _tensor(_legacy_pid('9', 2), 0, (2,), (1,)))])
  return _legacy_file(obj, [('7', _W_STORE), ('9', _B_STORE)])


def test_legacy_layout_reads_views_exactly():
  sd = torch_pickle.load_state_dict(_legacy_checkpoint())
  assert list(sd) == ['lin.weight', 'lin.bias']
  np.testing.assert_array_equal(sd['lin.weight'], _W_EXPECTED)
  np.testing.assert_array_equal(sd['lin.bias'], _B_STORE)
  assert sd['lin.weight'].dtype == np.float32 and sd['lin.weight'].flags.c_contiguous
  # A file object works like bytes.
  np.testing.assert_array_equal(torch_pickle.load(io.BytesIO(_legacy_checkpoint()))['lin.bias'], _B_STORE)


def test_zip_layout():
  pid = lambda key, n: _tuple(_u('storage'), _global('torch', 'FloatStorage'), _u(key), _u('cpu'), _int(n))
  obj = _state_dict([('w', _tensor(pid('0', 10), 2, (2, 3), (1, 2))), ('b', _tensor(pid('1', 2), 0, (2,), (1,)))])
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', obj)
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/data/0', _W_STORE.tobytes())
    z.writestr('archive/data/1', _B_STORE.tobytes())
  sd = torch_pickle.load_state_dict(buf.getvalue())
  np.testing.assert_array_equal(sd['w'], _W_EXPECTED)
  np.testing.assert_array_equal(sd['b'], _B_STORE)


class _Evil:
  def __init__(self, fn, arg):
    self.fn, self.arg = fn, arg

  def __reduce__(self):
    return self.fn, (self.arg,)


@pytest.mark.parametrize('protocol', [0, 2, 4])
@pytest.mark.parametrize('target', ['os.system', 'builtins.eval', 'builtins.exec'])
def test_hostile_pickles_raise_without_side_effects(tmp_path, protocol, target):
  marker = tmp_path / 'pwned'
  cmd = f'touch {marker}'
  payload = {
      'os.system': _Evil(os.system, cmd),
      'builtins.eval': _Evil(eval, f"open({str(marker)!r}, 'w').close()"),
      'builtins.exec': _Evil(exec, f"open({str(marker)!r}, 'w').close()"),
  }[target]
  raw = pickle.dumps(payload, protocol=protocol)
  # Sanity check that the payload really is hostile: plain pickle would run it (not executed here).
  assert target.split('.')[-1].encode() in raw
  with pytest.raises(torch_pickle.UnsafePickleError, match='refusing to load global'):
    torch_pickle.load(raw[:0] + _legacy_file(raw, []))  # hostile object inside a valid legacy header
  with pytest.raises(torch_pickle.UnsafePickleError):
    torch_pickle.load(raw)  # hostile pickle as the very first object (the magic number slot)
  assert not marker.exists()


def test_hostile_inside_zip_and_persistent_module(tmp_path):
  marker = tmp_path / 'pwned'
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w') as z:
    z.writestr('archive/data.pkl', pickle.dumps(_Evil(os.system, f'touch {marker}'), protocol=2))
  with pytest.raises(torch_pickle.UnsafePickleError, match='posix.system|os.system|nt.system'):
    torch_pickle.load(buf.getvalue())
  # Legacy files can embed whole modules by source ('module' persistent records): refused.
  obj = b'\x80\x02' + _tuple(_u('module'), _u('torch.nn.Linear')) + b'Q.'
  with pytest.raises(torch_pickle.UnsafePickleError, match="kind 'module'"):
    torch_pickle.load(_legacy_file(obj, []))
  assert not marker.exists()


def test_out_of_bounds_view_and_truncation_raise():
  obj = _state_dict([('w', _tensor(_legacy_pid('0', 4), 2, (2, 2), (2, 1)))])  # reads element 5 of 4
  with pytest.raises(torch_pickle.UnsafePickleError, match='reads element 5'):
    torch_pickle.load(_legacy_file(obj, [('0', np.zeros(4, np.float32))]))
  bomb = _state_dict([('w', _tensor(_legacy_pid('0', 4), 0, (100000, 100000), (0, 0)))])
  with pytest.raises(torch_pickle.UnsafePickleError, match='more elements'):
    torch_pickle.load(_legacy_file(bomb, [('0', np.zeros(4, np.float32))]))
  good = _legacy_checkpoint()
  with pytest.raises(torch_pickle.UnsafePickleError, match='truncated'):
    torch_pickle.load(good[:-3])
  with pytest.raises(torch_pickle.UnsafePickleError, match='magic number'):
    torch_pickle.load(pickle.dumps(123, protocol=2))
  with pytest.raises(TypeError, match='src must be bytes'):
    torch_pickle.load('a/path.pth')


def test_real_lite0_file_structure():
  with open(efficientnet.pretrained_path(), 'rb') as f:
    sd = torch_pickle.load_state_dict(f)
  assert len(sd) == 296
  assert sd['_conv_stem.weight'].shape == (32, 3, 3, 3)
  assert sd['_fc.weight'].shape == (1000, 1280)
  assert sd['_bn0.num_batches_tracked'].dtype == np.int64
  # 4,652,008 learnable parameters (EfficientNet-Lite0's published 4.65M) + 42,016 BN running statistics.
  learn = sum(v.size for k, v in sd.items() if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
  assert learn == 4_652_008
  # Running variances are >= 0 (some channels are dead, variance exactly 0: BN's epsilon 1e-3 covers them).
  variances = [v for k, v in sd.items() if k.endswith('running_var')]
  assert all(np.all(v >= 0) for v in variances)
  assert all(np.all(np.isfinite(v)) for v in sd.values())


def test_view_ending_exactly_at_the_storage_end_reads_and_one_past_is_refused():
  store = np.arange(4, dtype=np.float32)
  last_ok = _state_dict([('w', _tensor(_legacy_pid('0', 4), 1, (3,), (1,)))])        # elements 1..3 of 4
  np.testing.assert_array_equal(torch_pickle.load(_legacy_file(last_ok, [('0', store)]))['w'], store[1:])
  one_past = _state_dict([('w', _tensor(_legacy_pid('0', 4), 1, (4,), (1,)))])       # element 4 of 4
  with pytest.raises(torch_pickle.UnsafePickleError, match='reads element 4'):
    torch_pickle.load(_legacy_file(one_past, [('0', store)]))


# The allow-list the module docstring documents, written out independently of the module.
_DOCUMENTED_GLOBALS = {('collections', 'OrderedDict'), ('torch._utils', '_rebuild_tensor_v2'),
                       ('torch._utils', '_rebuild_tensor'), ('torch._utils', '_rebuild_parameter')} | {
    ('torch', f'{kind}Storage') for kind in
    ('Double', 'Float', 'Half', 'BFloat16', 'Long', 'Int', 'Short', 'Char', 'Byte', 'Bool')}


def test_allow_list_is_exactly_the_documented_set():
  assert set(torch_pickle._ALLOWED) == _DOCUMENTED_GLOBALS   # pylint: disable=protected-access


@pytest.mark.parametrize('module, name, arg', [
    ('builtins', 'getattr', None), ('builtins', '__import__', 'os'), ('subprocess', 'Popen', 'touch'),
    ('posix', 'system', 'touch')])
def test_globals_that_reach_for_code_are_refused_with_nothing_run(tmp_path, module, name, arg):
  marker = tmp_path / 'pwned'
  if arg == 'touch':
    call_args = _tuple(_u(f'touch {marker}')) if name == 'system' else _tuple(
        b']' + b'(' + _u('touch') + _u(str(marker)) + b'e')
  elif arg is None:
    call_args = _tuple(_global('collections', 'OrderedDict'), _u('__init__'))
  else:
    call_args = _tuple(_u(arg))
  hostile = b'\x80\x02' + _global(module, name) + call_args + b'R.'
  pickletools.dis(hostile, out=io.StringIO())   # a well-formed pickle that plain pickle would call (not run here)
  with pytest.raises(torch_pickle.UnsafePickleError, match=f'refusing to load global {module}.{name}'):
    torch_pickle.load(_legacy_file(hostile, []))
  assert not marker.exists()
