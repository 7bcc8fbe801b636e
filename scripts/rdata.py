#!/usr/bin/env python3
"""A reader for R's lazy-load databases (`Rdata.rdx` + `Rdata.rdb`), without R.

An installed R package with `LazyData: true` keeps its data sets in `data/Rdata.rdb`, indexed by
`data/Rdata.rdx`:

* `.rdx` is a serialized R list (written by `saveRDS`, so gzip-compressed; older or hand-made
  files may be 4-byte-length + zlib, both are accepted) with elements `variables`, `references`
  and `compressed`. `variables` is a named list mapping each object name to an integer pair
  `c(offset, length)` into the `.rdb` file.
* `.rdb` is a concatenation of blobs. Each blob is a 4-byte big-endian uncompressed length and
  then the compressed R serialization of the object: zlib directly after the length (the
  default), or, after the length, a one-byte type: `Z` (a raw LZMA2 stream, R's type 3), `2`
  (bzip2) or `0` (stored).

R's serialization format (the XDR form, "X\\n", versions 2 and 3) is decoded into plain Python
values: character vectors become `RVector` (a list subclass) of `str` (None for NA), numeric
vectors lists of int/float, lists `RVector` of items, pairlists `RPairlist`, symbols `RSymbol`.
Attributes are kept in `.attrs` (a dict) of vectors. Enough of the format is covered for data
sets (vectors, lists, data frames, factors, environments, ALTREP compact sequences and wrappers);
byte code and external pointers are not.

Usage: python3 scripts/rdata.py DIR_OR_RDX [NAME...]   lists the objects or prints a summary.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import sys
import zlib

# SEXP types
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP = 7, 8, 9, 10
INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 13, 14, 15, 16, 17
VECSXP, EXPRSXP, BCODESXP, EXTPTRSXP, WEAKREFSXP, RAWSXP, S4SXP = 19, 20, 21, 22, 23, 24, 25
# serialization pseudo-types
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 251, 250, 249, 248
PERSISTSXP, CLASSREFSXP, GENERICREFSXP, BCREPDEF = 247, 246, 245, 244
EMPTYENV_SXP, BASEENV_SXP, ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 242, 241, 240, 239, 238

IS_OBJECT, HAS_ATTR, HAS_TAG = 1 << 8, 1 << 9, 1 << 10
LATIN1_MASK, UTF8_MASK, BYTES_MASK, ASCII_MASK = 1 << 2, 1 << 3, 1 << 1, 1 << 6
NA_INTEGER = -(2**31)


class RError(Exception):
    pass


class RSymbol(str):
    """An R symbol (a name)."""


class RVector(list):
    """An R vector or list, with its attributes."""

    def __init__(self, items=(), rtype=VECSXP, attrs=None):
        super().__init__(items)
        self.rtype = rtype
        self.attrs = attrs or {}


class RPairlist(list):
    """A pairlist or language object: a list of (tag, value) pairs."""

    def __init__(self, items=(), rtype=LISTSXP, attrs=None):
        super().__init__(items)
        self.rtype = rtype
        self.attrs = attrs or {}

    def as_dict(self):
        return {str(k): v for k, v in self}


class REnvironment:
    def __init__(self, kind="env"):
        self.kind = kind
        self.frame = {}
        self.attrs = {}
        self.locked = False

    def __repr__(self):
        return f"<R environment {self.kind} {sorted(self.frame)}>"


class RPersistent(list):
    """A persistent reference (the names that key it in a lazy-load database's `references`)."""


class ROpaque:
    """Something decoded but not represented (closures, promises, ...)."""

    def __init__(self, rtype, parts):
        self.rtype = rtype
        self.parts = parts

    def __repr__(self):
        return f"<R object of type {self.rtype}>"


class _Reader:
    def __init__(self, data: bytes):
        self.buf = data
        self.pos = 0
        self.refs = []

    def bytes(self, n):
        if self.pos + n > len(self.buf):
            raise RError("serialized data ends early")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.bytes(4))[0]

    def length(self):
        n = self.int()
        if n == -1:  # long vector: upper and lower 32 bits
            hi, lo = struct.unpack(">II", self.bytes(8))
            n = (hi << 32) | lo
        elif n < -1:
            raise RError(f"negative length {n}")
        return n

    def string(self, n):
        return self.bytes(n)

    def string_vec(self):
        # an int 0, a length, then that many CHARSXP items
        if self.int() != 0:
            raise RError("names in persistent strings are not supported")
        return [self.item() for _ in range(self.int())]

    # --- items ---

    def attributes(self, flags):
        if not flags & HAS_ATTR:
            return {}
        a = self.item()
        if isinstance(a, RPairlist):
            return a.as_dict()
        return {}

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        if t == NILVALUE_SXP:
            return None
        if t == EMPTYENV_SXP:
            return REnvironment("empty")
        if t == BASEENV_SXP:
            return REnvironment("base")
        if t == GLOBALENV_SXP:
            return REnvironment("global")
        if t == UNBOUNDVALUE_SXP:
            return ROpaque(t, "unbound")
        if t == MISSINGARG_SXP:
            return ROpaque(t, "missing")
        if t == BASENAMESPACE_SXP:
            return REnvironment("namespace:base")
        if t == REFSXP:
            i = flags >> 8
            if i == 0:
                i = self.int()
            return self.refs[i - 1]
        if t == PERSISTSXP:
            # a reference to an object kept elsewhere (the `references` of a lazy-load database):
            # an int 0, then a character vector of names
            obj = RPersistent(self.string_vec())
            self.refs.append(obj)
            return obj
        if t == SYMSXP:
            name = self.item()  # a CHARSXP
            sym = RSymbol(name if name is not None else "NA")
            self.refs.append(sym)
            return sym
        if t in (PACKAGESXP, NAMESPACESXP):
            info = self.string_vec()  # name (and version) of the package or namespace
            kind = "package:" if t == PACKAGESXP else "namespace:"
            env = REnvironment(kind + " ".join(str(x) for x in info))
            self.refs.append(env)
            return env
        if t == ENVSXP:
            env = REnvironment()
            self.refs.append(env)
            env.locked = bool(self.int())
            self.item()  # enclosing environment
            frame = self.item()
            hashtab = self.item()
            env.attrs = self._pl_dict(self.item())
            if isinstance(frame, RPairlist):
                env.frame.update(frame.as_dict())
            if isinstance(hashtab, RVector):
                for bucket in hashtab:
                    if isinstance(bucket, RPairlist):
                        env.frame.update(bucket.as_dict())
            return env
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
            return self._pairlist(flags, t)
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None
            raw = self.string(n)
            if levels & LATIN1_MASK:
                return raw.decode("latin-1")
            if levels & BYTES_MASK:
                return raw.decode("latin-1")
            return raw.decode("utf-8", errors="surrogateescape")
        if t in (LGLSXP, INTSXP):
            n = self.length()
            vals = list(struct.unpack(f">{n}i", self.bytes(4 * n)))
            vals = [None if v == NA_INTEGER else (bool(v) if t == LGLSXP else v) for v in vals]
            return RVector(vals, t, self.attributes(flags))
        if t == REALSXP:
            n = self.length()
            return RVector(struct.unpack(f">{n}d", self.bytes(8 * n)), t, self.attributes(flags))
        if t == CPLXSXP:
            n = self.length()
            d = struct.unpack(f">{2 * n}d", self.bytes(16 * n))
            vals = [complex(d[2 * i], d[2 * i + 1]) for i in range(n)]
            return RVector(vals, t, self.attributes(flags))
        if t == STRSXP:
            n = self.length()
            vals = [self.item() for _ in range(n)]
            return RVector(vals, t, self.attributes(flags))
        if t in (VECSXP, EXPRSXP):
            n = self.length()
            vals = [self.item() for _ in range(n)]
            return RVector(vals, t, self.attributes(flags))
        if t == RAWSXP:
            n = self.length()
            return RVector(self.bytes(n), t, self.attributes(flags))
        if t == S4SXP:
            return ROpaque(t, self.attributes(flags))
        if t in (SPECIALSXP, BUILTINSXP):
            n = self.int()
            return ROpaque(t, self.string(n).decode())
        if t == EXTPTRSXP:
            obj = ROpaque(t, None)
            self.refs.append(obj)
            obj.parts = (self.item(), self.item(), self.attributes(flags))
            return obj
        if t == WEAKREFSXP:
            obj = ROpaque(t, None)
            self.refs.append(obj)
            self.attributes(flags)
            return obj
        if t == ALTREP_SXP:
            return self._altrep()
        if t in (BCODESXP, BCREPDEF, CLASSREFSXP, GENERICREFSXP):
            raise RError(f"byte code and class references (type {t}) are not supported")
        raise RError(f"unknown SEXP type {t} at byte {self.pos - 4}")

    def _pl_dict(self, x):
        return x.as_dict() if isinstance(x, RPairlist) else {}

    def _pairlist(self, flags, t):
        # Pairlists are stored as a chain of cells; read iteratively to keep the stack flat.
        items = []
        attrs = None
        rtype = LISTSXP if t in (LISTSXP, ATTRLISTSXP) else t
        while True:
            a = self.attributes(flags) if flags & HAS_ATTR else {}
            if attrs is None:
                attrs = a
            tag = self.item() if flags & HAS_TAG else None
            car = self.item()
            items.append((tag, car))
            flags = self.int()
            nt = flags & 0xFF
            if nt == NILVALUE_SXP:
                break
            chain = (LISTSXP, ATTRLISTSXP, LANGSXP, ATTRLANGSXP, DOTSXP)
            if nt not in (LISTSXP, ATTRLISTSXP) or t not in chain:
                # the CDR is not a plain pairlist cell: decode it as an item of its own
                self.pos -= 4
                items.append((None, self.item()))
                break
        if t in (CLOSXP, PROMSXP):
            return ROpaque(t, items)
        return RPairlist(items, rtype, attrs)

    def _altrep(self):
        info = self.item()
        state = self.item()
        attr = self.item()
        cls = str(info[0][1]) if isinstance(info, RPairlist) and info else "?"
        attrs = self._pl_dict(attr)
        if cls == "compact_intseq":
            n, start, step = (int(v) for v in state)
            return RVector([start + i * step for i in range(n)], INTSXP, attrs)
        if cls == "compact_realseq":
            n, start, step = state
            return RVector([start + i * step for i in range(int(n))], REALSXP, attrs)
        if cls == "deferred_string":
            arg = state[0][1] if isinstance(state, RPairlist) else state
            vals = [None if v is None else _num_to_str(v) for v in arg]
            return RVector(vals, STRSXP, attrs)
        if cls.startswith("wrap_"):
            x = state[0]
            if isinstance(x, (RVector, RPairlist)) and attrs:
                x.attrs = attrs
            return x
        raise RError(f"unsupported ALTREP class {cls}")


def _num_to_str(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def unserialize(data: bytes):
    """Decodes one R serialization stream (XDR form)."""
    if data[:2] == b"X\n":
        r = _Reader(data[2:])
    elif data[:2] in (b"A\n", b"B\n"):
        raise RError("only the XDR serialization form is supported")
    else:
        r = _Reader(data)  # some streams carry no format marker
    version = r.int()
    r.int()  # R version that wrote it
    r.int()  # minimal R version to read it
    if version == 3:
        n = r.int()
        r.string(n)  # native encoding
    elif version != 2:
        raise RError(f"unsupported serialization version {version}")
    return r.item()


def decompress_rds(data: bytes) -> bytes:
    """Uncompresses a file written by saveRDS (gzip, bzip2, xz or none) or a length+zlib blob."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:2] in (b"X\n", b"A\n", b"B\n"):
        return data
    return decompress_blob(data)


def decompress_blob(blob: bytes) -> bytes:
    """Uncompresses one lazy-load database entry: 4-byte length, then the compressed stream."""
    (n,) = struct.unpack(">I", blob[:4])
    body = blob[4:]
    kind = body[:1]
    if kind == b"Z":  # R's compress type 3: a raw LZMA2 stream
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
        out = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters).decompress(body[1:])
    elif kind == b"2":  # type 2: bzip2
        out = bz2.decompress(body[1:])
    elif kind == b"0":  # type 2 or 3, stored because compression did not pay
        out = body[1:]
    else:  # type 1 (the default): zlib with no type byte
        out = zlib.decompress(body)
    if len(out) != n:
        raise RError(f"entry uncompressed to {len(out)} bytes, expected {n}")
    return out


class LazyLoadDB:
    """An R lazy-load database: `LazyLoadDB("…/data/Rdata")` (the path without extension)."""

    def __init__(self, base: str):
        if base.endswith((".rdx", ".rdb")):
            base = base[:-4]
        self.base = base
        with open(base + ".rdx", "rb") as f:
            index = unserialize(decompress_rds(f.read()))
        if not isinstance(index, RVector):
            raise RError(f"{base}.rdx does not hold a list")
        names = index.attrs.get("names", [])
        top = dict(zip(names, index))
        self.variables = self._offsets(top.get("variables"))
        # environments referred to by the objects, kept as the index holds them (offset pairs)
        refs = top.get("references")
        self.references = dict(zip(refs.attrs.get("names", []), refs)) if refs else {}

    @staticmethod
    def _offsets(lst):
        if lst is None:
            return {}
        names = lst.attrs.get("names", [])
        return {n: (int(v[0]), int(v[1])) for n, v in zip(names, lst)}

    def names(self):
        return list(self.variables)

    def raw(self, name: str) -> bytes:
        off, n = self.variables[name]
        with open(self.base + ".rdb", "rb") as f:
            f.seek(off)
            blob = f.read(n)
        if len(blob) != n:
            raise RError(f"{self.base}.rdb is shorter than its index says")
        return decompress_blob(blob)

    def get(self, name: str):
        return unserialize(self.raw(name))


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    path = argv[1]
    if os.path.isdir(path):
        path = os.path.join(path, "Rdata")
    db = LazyLoadDB(path)
    for name in argv[2:] or db.names():
        obj = db.get(name)
        if isinstance(obj, RVector):
            head = [x for x in obj[:3]]
            print(f"{name}: type {obj.rtype}, length {len(obj)}, attrs {sorted(obj.attrs)}, head {head!r}")
        else:
            print(f"{name}: {obj!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
