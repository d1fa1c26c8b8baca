"""A decoding result or a lab's report as bytes and back, safe to take from a store other machines can write (Redis).

Bytes from such a store must never become code execution, so nothing here pickles or unpickles. The format is
one ``.npz``-style zip, uncompressed, that ``np.load(..., allow_pickle=False)`` opens:

* ``meta.json``: UTF-8 JSON ``{"schema": SCHEMA, "kind": KIND, "meta": {...}, "type": NAME or null, "value": {...}
  or null}``, NAME one of ``value_types()`` (a run, the Cache lab's report, the Divergence lab's report), every scalar
  and list of the value by field name; where a field holds an array, ``{"array": PATH}``;
* ``PATH.npy`` for each such array (the attention maps, the per-step comparison columns), written by numpy.

The schema is the dataclasses' own type hints (``Run`` in gptviz/decoding.py and what it holds: gptviz/trace.py,
gptviz/compare.py, gptviz/settings.py; ``LabReport`` in gptviz/lab/__init__.py; ``DivergenceReport`` in
gptviz/divergence/__init__.py): every field is written by name, and on load each must be there, named and typed as
its hint says, or ``loads`` refuses with a CodecError that says where and what. So a new field travels without a
change here, as long as its hint is one of the kinds ``_encode`` knows.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import types
import typing
import zipfile
from enum import Enum
from functools import cache

import numpy as np
import torch

from gptviz.decoding import Run

SCHEMA = 2  # format version: bump it when a change would make an older build misread a newer result (2: typed values)
KIND = "gptviz.result"  # meta.json's "kind": a zip of other JSON is not taken for a result
META = "meta.json"  # the zip entry holding the JSON
ARRAY_KINDS = "biuf"  # numpy dtype kinds an array may have: bool, signed, unsigned, floating (never object)
_TOP = {"schema", "kind", "meta", "type", "value"}  # meta.json's keys
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every entry's timestamp: the same result gives the same bytes
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first bytes: an entry, or an empty archive
_SCALARS = (bool, int, float, str)  # the JSON scalars a hint may name


class CodecError(ValueError):
    """Bytes that are not a result this build can read, or a value it cannot write; the message says which."""


@cache
def value_types() -> dict[str, type]:
    """The values a result may hold, by the name meta.json gives them (and the root of every path it writes)."""
    from gptviz.divergence import DivergenceReport  # the labs import this module's callers: named when first used
    from gptviz.lab import LabReport

    return {"run": Run, "lab_report": LabReport, "divergence_report": DivergenceReport}


def dumps(meta: dict, value=None) -> bytes:
    """``meta`` (JSON: str keys; dict, list, str, int, float, bool, None) and ``value`` (one of ``value_types()``,
    or None) as one zip."""
    _check_json(meta, "meta")
    arrays: dict[str, np.ndarray] = {}
    name = None if value is None else _type_name(value)
    body = None if value is None else _encode(value, type(value), name, arrays)
    text = json.dumps({"schema": SCHEMA, "kind": KIND, "meta": meta, "type": name, "value": body})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(META, _ZIP_TIME), text.encode())
        for path, array in arrays.items():
            array = np.ascontiguousarray(array)  # copied only if it is not C-ordered: the header says C order
            with zf.open(zipfile.ZipInfo(path + ".npy", _ZIP_TIME), "w", force_zip64=True) as entry:
                # What np.save writes (byte for byte), but the data goes in as a view: write_array would copy
                # it with tobytes() first, a third of the time for a run's attention.
                np.lib.format.write_array_header_1_0(entry, np.lib.format.header_data_from_array_1_0(array))
                entry.write(memoryview(array.reshape(-1)).cast("B"))
    return out.getvalue()


def loads(data: bytes, expect: type | None = None) -> tuple[dict, typing.Any]:
    """What ``dumps`` wrote: (meta, value or None). Raises CodecError for anything else, and when ``expect`` is
    given, for a value of another type."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"a result is bytes, got {type(data).__name__}.")
    data = bytes(data)
    if not data.startswith(_ZIP_MAGIC):
        raise CodecError(f"not a gptviz result: not a zip archive (it starts with {data[:8]!r}).")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            top = _read_meta(npz)
            arrays = {name: _read_array(npz, name) for name in npz.files if name != META}
    except CodecError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise CodecError(f"not a readable gptviz result: {type(exc).__name__}: {exc}") from None
    value, name, known = None, top["type"], value_types()
    if expect is not None and expect not in known.values():
        raise ValueError(f"expect must be one of {', '.join(c.__name__ for c in known.values())}")
    if expect is not None and name is None:
        raise CodecError(f"this result holds no value, not the {_type_name(expect)} asked for.")
    if (name is None) != (top["value"] is None):
        raise CodecError(f"{META}: a type names its value and a value has a type (type {name!r}, value "
                         f"{'null' if top['value'] is None else 'given'}).")
    if name is not None:
        if name not in known:
            raise CodecError(f"{META}: unknown type {name!r} (this build reads {', '.join(known)}).")
        if expect is not None and known[name] is not expect:
            raise CodecError(f"this result holds a {name}, not the {_type_name(expect)} asked for.")
        value = _decode(top["value"], known[name], name, arrays)
    if arrays:
        raise CodecError(f"arrays no field refers to: {', '.join(sorted(arrays))}.")
    return top["meta"], value


def dumps_run(run: Run) -> bytes:
    """A run alone (empty meta)."""
    return dumps({}, run)


def loads_run(data: bytes) -> Run:
    """The run ``dumps_run`` (or ``dumps``) wrote; CodecError if the bytes hold none."""
    return loads(data, expect=Run)[1]


def to_json(value) -> dict:
    """A dataclass of plain fields (settings: no arrays) as JSON, by its type hints: what a task's ``wire()`` sends."""
    arrays: dict[str, np.ndarray] = {}
    body = _encode(value, type(value), type(value).__name__, arrays)
    if arrays:
        raise CodecError(f"cannot write {', '.join(arrays)} as plain JSON: it holds arrays.")
    return body


def from_json(data, cls: type):
    """``to_json`` undone for ``cls``, every field checked against its hint (CodecError says where)."""
    return _decode(data, cls, cls.__name__, {})


def _type_name(value) -> str:
    cls = value if isinstance(value, type) else type(value)
    for name, known in value_types().items():
        if cls is known:
            return name
    raise CodecError(f"cannot write a {cls.__name__}: a result holds one of {', '.join(value_types())}.")


# ---- reading the zip -------------------------------------------------------------------------------------------

def _read_meta(npz) -> dict:
    names = npz.zip.namelist()
    if len(set(names)) != len(names):
        raise CodecError("the archive names an entry twice.")
    packed = [i.filename for i in npz.zip.infolist() if i.compress_type != zipfile.ZIP_STORED]
    if packed:  # stored entries cannot be a zip bomb: each holds at most the bytes given
        raise CodecError(f"compressed entries ({', '.join(packed)}): this build reads uncompressed ones only.")
    if META not in npz.files:
        raise CodecError(f"not a gptviz result: no {META} in the archive (it holds {', '.join(names) or 'nothing'}).")
    raw = npz[META]
    if isinstance(raw, np.ndarray):
        raise CodecError(f"{META} is an array, not JSON text.")
    try:
        top = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CodecError(f"{META} is not UTF-8 JSON: {exc}") from None
    if not isinstance(top, dict):
        raise CodecError(f"{META} must be a JSON object, got {_what(top)}.")
    schema = top.get("schema")
    if type(schema) is not int or schema != SCHEMA:  # not True or 1.0, which equal 1
        found = "no schema version" if "schema" not in top else f"format version {schema!r}"
        raise CodecError(f"this result has {found}; this build of gptviz reads version {SCHEMA} only.")
    if top.get("kind") != KIND:
        raise CodecError(f"not a gptviz result: {META} says kind {top.get('kind')!r}, expected {KIND!r}.")
    _check_keys(top, _TOP, META)
    if not isinstance(top["meta"], dict):
        raise CodecError(f"{META}: meta must be a JSON object, got {_what(top['meta'])}.")
    return top


def _read_array(npz, name: str) -> np.ndarray:
    """Entry ``name``: its header checked (a numeric dtype, no more elements than bytes) before numpy reads it."""
    entry = name + ".npy"
    if entry not in npz.zip.namelist():
        raise CodecError(f"unexpected entry {name!r}: a result holds {META} and .npy arrays only.")
    with npz.zip.open(entry) as f:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(f)
        start = f.tell()
    if dtype.hasobject:
        raise CodecError(f"array {name!r} has an object dtype ({dtype}), which only pickle can read: refused.")
    if dtype.kind not in ARRAY_KINDS or dtype.fields is not None:
        raise CodecError(f"array {name!r} has dtype {dtype}; a result holds bool, integer and float arrays only.")
    size = math.prod(shape) * dtype.itemsize
    if size > npz.zip.getinfo(entry).file_size - start:
        raise CodecError(f"array {name!r} claims shape {shape} ({size} bytes) but its entry is shorter.")
    return npz[name]


# ---- values to JSON and arrays, by type hint ------------------------------------------------------------------

@cache
def _hints(cls: type) -> dict[str, typing.Any]:
    """A dataclass's fields (those its constructor takes) and their resolved type hints."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


@cache
def _kind(hint) -> tuple[str, tuple]:
    """What ``hint`` is, once per hint (a run walks the same few thousand times): a tag and its arguments."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise CodecError(f"the type hint {hint!r} is not one this codec knows (of unions, only X | None).")
        return "optional", (others[0],)
    if hint is np.ndarray or hint is torch.Tensor:
        return "array", ()
    if dataclasses.is_dataclass(hint):
        return "dataclass", ()
    if origin is tuple and Ellipsis not in args and args:
        return "tuple", args  # fixed length, each place its own hint: tuple[str, str]
    if origin in (list, tuple):
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise CodecError(f"the type hint {hint!r} is not one this codec knows (of tuples, tuple[X, ...] and "
                             "tuple[X, Y]).")
        return "sequence", (origin, args[0])
    if origin is dict:
        return "mapping", args
    if hint is dict:
        return "json", ()
    if origin is typing.Literal:
        return "literal", args
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "enum", ()
    if hint in _SCALARS:
        return "scalar", ()
    raise CodecError(f"the type hint {hint!r} is not one this codec knows.")


def _encode(value, hint, path: str, arrays: dict[str, np.ndarray]):
    """``value`` as JSON, typed by ``hint``; arrays go to ``arrays`` under their path and JSON names them."""
    kind, args = _kind(hint)
    if kind == "optional":
        return None if value is None else _encode(value, args[0], path, arrays)
    if kind == "array":
        if not isinstance(value, hint):
            raise CodecError(f"cannot write {path}: expected {hint.__module__}.{hint.__name__}, got {_what(value)}.")
        array = value.detach().cpu().numpy() if hint is torch.Tensor else value
        if array.dtype.kind not in ARRAY_KINDS or array.dtype.fields is not None:
            raise CodecError(f"cannot write {path}: dtype {array.dtype} (bool, integer and float arrays only).")
        arrays[path] = array
        return {"array": path}
    if kind == "dataclass":
        _expect(isinstance(value, hint), value, hint.__name__, path, "write")
        return {name: _encode(getattr(value, name), h, f"{path}.{name}", arrays) for name, h in _hints(hint).items()}
    if kind == "sequence":
        sequence, item = args
        _expect(isinstance(value, sequence), value, sequence.__name__, path, "write")
        if item in _SCALARS and all(type(v) is item for v in value):  # the common case, at C speed
            return list(value)
        return [_encode(v, item, f"{path}[{i}]", arrays) for i, v in enumerate(value)]
    if kind == "tuple":
        _expect(isinstance(value, tuple) and len(value) == len(args), value, f"a tuple of {len(args)}", path, "write")
        return [_encode(v, h, f"{path}[{i}]", arrays) for i, (v, h) in enumerate(zip(value, args))]
    if kind == "mapping":
        _expect(isinstance(value, dict), value, "dict", path, "write")
        out = {}
        for k, v in value.items():
            key = _encode(k, args[0], f"{path} key", arrays)
            out[key] = _encode(v, args[1], f"{path}.{key}", arrays)
        return out
    if kind == "json":  # free-form (Run.info): JSON as it is
        _check_json(value, path)
        return value
    if kind == "literal":
        _expect(value in args, value, f"one of {', '.join(map(repr, args))}", path, "write")
        return value
    if kind == "enum":
        _expect(isinstance(value, hint), value, hint.__name__, path, "write")
        return value.value
    return _scalar(value, hint, path, "write")


def _decode(value, hint, path: str, arrays: dict[str, np.ndarray]):
    """``_encode`` undone: the value ``hint`` describes; the arrays named are taken out of ``arrays``."""
    kind, args = _kind(hint)
    if kind == "optional":
        return None if value is None else _decode(value, args[0], path, arrays)
    if kind == "array":
        _expect(isinstance(value, dict) and set(value) == {"array"} and isinstance(value["array"], str),
                value, '{"array": NAME}', path, "read")
        name = value["array"]
        if name not in arrays:
            raise CodecError(f"{path} names array {name!r}, which the archive does not hold (or another field took).")
        array = arrays.pop(name)
        return torch.from_numpy(array) if hint is torch.Tensor else array
    if kind == "dataclass":
        _expect(isinstance(value, dict), value, f"a {hint.__name__} (JSON object)", path, "read")
        fields = _hints(hint)
        _check_keys(value, set(fields), path)
        return hint(**{name: _decode(value[name], h, f"{path}.{name}", arrays) for name, h in fields.items()})
    if kind == "sequence":
        sequence, item = args
        _expect(isinstance(value, list), value, "a list", path, "read")
        if item in _SCALARS and all(type(v) is item for v in value):  # JSON gave exactly the type: nothing to do
            return sequence(value)
        return sequence(_decode(v, item, f"{path}[{i}]", arrays) for i, v in enumerate(value))
    if kind == "tuple":
        _expect(isinstance(value, list) and len(value) == len(args), value, f"a list of {len(args)}", path, "read")
        return tuple(_decode(v, h, f"{path}[{i}]", arrays) for i, (v, h) in enumerate(zip(value, args)))
    if kind == "mapping":
        _expect(isinstance(value, dict), value, "a JSON object", path, "read")
        return {_decode(k, args[0], f"{path} key", arrays): _decode(v, args[1], f"{path}.{k}", arrays)
                for k, v in value.items()}
    if kind == "json":
        _expect(isinstance(value, dict), value, "a JSON object", path, "read")
        return value
    if kind == "literal":
        _expect(value in args, value, f"one of {', '.join(map(repr, args))}", path, "read")
        return value
    if kind == "enum":
        known = [m.value for m in hint]
        if value not in known:
            raise CodecError(f"{path}: unknown {hint.__name__} {value!r} (this build knows {', '.join(known)}).")
        return hint(value)
    return _scalar(value, hint, path, "read")


def _scalar(value, hint, path: str, doing: str):
    """bool, int, float and str, checked both ways: an int is taken where a float goes (JSON writes 2.0 as 2.0, but
    a caller may have set 2), never a bool where a number goes."""
    if hint is bool:
        _expect(isinstance(value, (bool, np.bool_)), value, "True or False", path, doing)
        return bool(value)
    if hint is int:
        _expect(isinstance(value, (int, np.integer)) and not isinstance(value, bool), value, "a whole number",
                path, doing)
        return int(value)
    if hint is float:
        _expect(isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool), value,
                "a number", path, doing)
        return float(value)
    if hint is str:
        _expect(isinstance(value, str), value, "text", path, doing)
        return value
    raise AssertionError(hint)  # _kind lets only _SCALARS through


def _expect(ok: bool, value, wanted: str, path: str, doing: str) -> None:
    if not ok:
        raise CodecError(f"cannot {doing} {path}: expected {wanted}, got {_what(value)}.")


def _check_keys(obj: dict, wanted: set[str], path: str) -> None:
    missing, extra = sorted(wanted - set(obj)), sorted(set(obj) - wanted)
    if missing or extra:
        said = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(extra)}" if extra else ""]
        raise CodecError(f"{path}: wrong field names ({'; '.join(s for s in said if s)}).")


def _check_json(value, path: str) -> None:
    """Plain JSON that comes back equal: dict with str keys, list, str, int, float, bool, None (a tuple would come
    back a list, so it is refused rather than changed)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CodecError(f"cannot write {path}: key {k!r} is not text (JSON keys are strings).")
            _check_json(v, f"{path}.{k}")
    else:
        hint = " (JSON has lists, and it would come back as one: pass a list)" if isinstance(value, tuple) else ""
        raise CodecError(f"cannot write {path}: {_what(value)} is not JSON{hint}.")


def _what(value) -> str:
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({type(value).__name__})"
