"""Reads the toolkit's dataset DBs (mp-dataset(5)) from Python.

    import mp_dataset
    ds = mp_dataset.Dataset("train.db")     # meta checked, every CRC verified
    len(ds), ds.meta["classes"], ds.labels   # labels: numpy int32 array
    rec = ds.record(7)        # .index .name .label .width .height .encoding .payload
    img = ds.image(7)         # H x W x 3 uint8, R, G, B

The DB is opened as the toolkit's readers open it, read-only and without a
lock file. Opening walks every macrobatch once: it checks the header, the
CRC, the item table and the packing exactly as mp-dataset(5) lists, that
each macrobatch starts where the one before ended, and that the counts agree
with the meta document; a failure raises DatasetError, whose message names
the DB and the macrobatch. Afterwards only an index stays in memory; the
payloads are read from LMDB's map when asked for. The object may be passed
to other processes (a PyTorch DataLoader's workers): each process opens the
environment again on first use.

Decoding follows mp-batchwriter(1)'s rules with PIL: grey is replicated,
palette and low bit depths are expanded, alpha is dropped, CMYK/YCCK JPEG is
taken as Adobe's inverted CMYK (R = C * K / 255, rounded), 16-bit grey PNG is
scaled as libpng's png_set_scale_16 does. One known difference: for 16-bit
RGB PNG PIL keeps the high byte, where libpng rounds, so a sample may differ
by one. Such payloads only occur under the "keep" policy.

Run as a program it lists a DB in mp-inspect --list's format, or writes one
decoded record as PNG:

    python3 mp_dataset.py list DB
    python3 mp_dataset.py extract DB N OUT.png
"""
import io
import json
import math
import os
import re
import struct
import sys
import zlib

try:
    import numpy as np
except ImportError:
    # run as a program: what to install, not a traceback; imported: the
    # importer's ImportError handling names the module
    if __name__ != "__main__":
        raise
    sys.stderr.write("mp_dataset.py: cannot import numpy (Debian: python3-numpy)\n")
    sys.exit(1)

try:
    import lmdb
except ImportError:  # reported when a DB is opened
    lmdb = None

ENCODINGS = {0: "raw", 1: "jpeg", 2: "png"}
MB_MAGIC = b"MPMBATCH"
MB_HEADER = struct.Struct("<8sIIQII")     # magic version count first total flags
MB_ITEM = struct.Struct("<iIIBBHIIII")    # label h w channels enc reserved noff nlen poff plen
MAX_COUNT = 1048576
MAX_NAME = 4096
MAX_SEED = 999999999999999   # the largest shuffle_seed (mp-dataset(5))


class DatasetError(Exception):
    """A dataset that cannot be read; the message names it. request: the
    path names no dataset DB at all (missing, not a directory, no
    data.mdb), the caller's mistake rather than damaged data, as the
    loader's bad_data = 0 says (mp-train then exits 2, not 1)."""

    def __init__(self, msg, request=False):
        super().__init__(msg)
        self.request = request


class Record:
    __slots__ = ("index", "name", "label", "width", "height", "encoding", "payload")

    def __init__(self, index, name, label, width, height, encoding, payload):
        self.index, self.name, self.label = index, name, label
        self.width, self.height, self.encoding = width, height, encoding
        self.payload = payload

    def __repr__(self):
        return "Record(%d, %r, label %d, %dx%d, %s, %d bytes)" % (
            self.index, self.name, self.label, self.width, self.height,
            ENCODINGS[self.encoding], len(self.payload))


def crc32(data):
    return zlib.crc32(data) & 0xffffffff


# ---- macrobatch -------------------------------------------------------------

def parse_macrobatch(buf):
    """Checks one macrobatch (bytes or memoryview) as mp-dataset(5) says a
    reader must, in the same order. Returns (first_record, items), items a
    list of (label, height, width, encoding, name, payload_off, payload_len).
    Raises ValueError with the reason."""
    n = len(buf)
    if n < 36 or bytes(buf[:8]) != MB_MAGIC:
        raise ValueError("not a macrobatch (no MPMBATCH magic)" if n >= 8 else
                         "truncated: %d bytes" % n)
    _, version, count, first, total, flags = MB_HEADER.unpack_from(buf, 0)
    if version != 1:
        raise ValueError("version %d, expected 1" % version)
    if total != n:
        raise ValueError("total_len %d, but the value holds %d bytes" % (total, n))
    (stored,) = struct.unpack_from("<I", buf, n - 4)
    computed = crc32(buf[:n - 4])
    if stored != computed:
        raise ValueError("CRC mismatch (stored %08x, computed %08x)" % (stored, computed))
    if flags != 0:
        raise ValueError("flags %#x, expected 0" % flags)
    if not 1 <= count <= MAX_COUNT or 32 + 32 * count > n - 4:
        raise ValueError("count %d does not fit" % count)
    items = []
    name_at = 32 + 32 * count
    rows = [MB_ITEM.unpack_from(buf, 32 + 32 * i) for i in range(count)]
    payload_at = name_at + sum(r[7] for r in rows)
    for i, (label, h, w, ch, enc, reserved, noff, nlen, poff, plen) in enumerate(rows):
        what = "item %d: " % i
        if label < -1:
            raise ValueError(what + "label %d" % label)
        if reserved != 0:
            raise ValueError(what + "reserved field %d, expected 0" % reserved)
        if not (1 <= h <= 65535 and 1 <= w <= 65535):
            raise ValueError(what + "size %dx%d" % (w, h))
        if ch != 3:
            raise ValueError(what + "%d channels, expected 3" % ch)
        if enc not in ENCODINGS:
            raise ValueError(what + "unknown encoding %d" % enc)
        if not 1 <= nlen <= MAX_NAME:
            raise ValueError(what + "name length %d" % nlen)
        if noff != name_at or noff + nlen > n - 4:
            raise ValueError(what + "name at %d, expected %d" % (noff, name_at))
        name = bytes(buf[noff:noff + nlen])
        if b"\0" in name:
            raise ValueError(what + "the name holds a NUL byte")
        name_at += nlen
        if poff != payload_at or poff + plen > n - 4:
            raise ValueError(what + "payload at %d (%d bytes), expected at %d" %
                             (poff, plen, payload_at))
        if enc == 0 and plen != w * h * 3:
            raise ValueError(what + "raw payload of %d bytes for %dx%d" % (plen, w, h))
        payload_at += plen
        items.append((label, h, w, enc, name.decode("utf-8", "surrogateescape"), poff, plen))
    if payload_at != n - 4:
        raise ValueError("%d stray bytes before the CRC" % (n - 4 - payload_at))
    return first, items


# ---- meta document ----------------------------------------------------------

def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v, lo, hi):
    return _is_num(v) and v == int(v) and lo <= v <= hi


_META_CRC = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"crc32"[ \t\n\r]*:[ \t\n\r]*"')


def _meta_crc_at(raw):
    """Where the 8 characters of the document's CRC start, or None: it is
    the first member, with only JSON white space around '{' and ':'."""
    m = _META_CRC.match(raw)
    return m.end() if m and len(raw) >= m.end() + 9 else None


def _meta_crc(raw, at):
    return "%08x" % (zlib.crc32(raw[:at] + b"00000000" + raw[at + 8:]) & 0xffffffff)


def meta_bytes(meta):
    """A meta document as the toolkit writes it: format_version 2 with its
    CRC first (mp-dataset(5)), the CRC over exactly the bytes returned."""
    doc = {"crc32": "00000000"}
    doc.update((k, v) for k, v in meta.items() if k != "crc32")
    doc["format_version"] = 2
    raw = bytearray(json.dumps(doc, indent="\t", ensure_ascii=False).encode("utf-8"))
    at = _meta_crc_at(bytes(raw))
    raw[at:at + 8] = _meta_crc(bytes(raw), at).encode()
    return bytes(raw)


def _no_duplicates(pairs):
    """A JSON object whose member names are all different (json.loads
    would keep the last of two, the toolkit's C reader the first)."""
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError("member \"%s\" appears more than once" % k)
        obj[k] = v
    return obj


def load_meta(raw):
    """Parses and checks the bytes of a meta document, its CRC included;
    raises ValueError (JSONDecodeError and UnicodeDecodeError too)."""
    raw = bytes(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("not UTF-8 text (byte 0x%02x at offset %d)" % (raw[e.start], e.start))
    meta = json.loads(text, object_pairs_hook=_no_duplicates)
    at = _meta_crc_at(raw)
    if at is not None:
        stored = raw[at:at + 8].decode("ascii", "replace")
        if raw[at + 8:at + 9] != b'"' or not re.fullmatch("[0-9a-f]{8}", stored):
            raise ValueError("\"crc32\" is not 8 lowercase hex digits")
        if stored != _meta_crc(raw, at):
            raise ValueError("CRC mismatch: the document is damaged (crc32 %s in it, %s "
                             "computed)" % (stored, _meta_crc(raw, at)))
    elif isinstance(meta, dict) and "crc32" in meta:
        raise ValueError("\"crc32\" is not where it must be: the first member of the document")
    check_meta(meta, at is not None)
    return meta


def check_meta(meta, has_crc=False):
    """The checks of mp-dataset(5) on a parsed meta document; has_crc says
    its CRC was found and matched (load_meta). Raises ValueError."""
    if not isinstance(meta, dict) or meta.get("format") != "mp-dataset":
        raise ValueError("not an mp-dataset meta document")
    fields = ["format_version", "complete", "records", "macrobatches", "macrobatch_size",
              "height", "width", "channels", "size", "fit", "padding", "pad_fill",
              "encoding", "quality", "mean", "labelled", "classes", "class_names",
              "source_list", "skipped", "shuffle_seed", "created_by"]
    for f in fields:
        # version 1 documents were written without shuffle_seed at first
        if f == "shuffle_seed" and meta.get("format_version") == 1:
            continue
        if f not in meta:
            raise ValueError("the meta document has no \"%s\"" % f)
    if meta["format_version"] not in (1, 2) or isinstance(meta["format_version"], bool):
        raise ValueError("format_version %r, expected 1 or 2" % meta["format_version"])
    if meta["format_version"] >= 2 and not has_crc:
        # a damaged key must not pass for a document without a CRC
        raise ValueError("\"crc32\" is missing or damaged: format_version %d has it as "
                         "the first member of the document" % meta["format_version"])
    for f in ("complete", "labelled"):
        if not isinstance(meta[f], bool):
            raise ValueError("\"%s\" is not a boolean" % f)
    ranges = {"records": (0, 10**15), "skipped": (0, 10**15), "macrobatches": (0, 10**12),
              "macrobatch_size": (1, MAX_COUNT), "height": (1, 65535), "width": (1, 65535),
              "size": (1, 65535), "padding": (0, 65535), "quality": (0, 100),
              "channels": (3, 3), "classes": (0, 65536)}
    for f, (lo, hi) in ranges.items():
        if not _is_int(meta[f], lo, hi):
            raise ValueError("\"%s\" is %r, not an integer from %d to %d" % (f, meta[f], lo, hi))
    for f, most in (("fit", 15), ("pad_fill", 15), ("encoding", 15), ("created_by", 63)):
        if not isinstance(meta[f], str) or len(meta[f].encode()) > most:
            raise ValueError("\"%s\" is not a string of at most %d bytes" % (f, most))
    for f, words in (("fit", ("pad", "crop", "stretch")), ("pad_fill", ("mean", "zero", "edge")),
                     ("encoding", ("keep", "jpeg", "png", "raw"))):
        if meta[f] not in words:
            raise ValueError("\"%s\" = %r is not a known value" % (f, meta[f]))
    if meta["height"] != meta["size"] + 2 * meta["padding"] or meta["width"] != meta["height"]:
        raise ValueError("%dx%d images do not match size %d with padding %d" % (
            meta["width"], meta["height"], meta["size"], meta["padding"]))
    mean = meta["mean"]
    if mean is not None and not (isinstance(mean, list) and len(mean) == 3 and
                                 all(_is_num(v) and 0 <= v <= 255 for v in mean)):
        raise ValueError("\"mean\" is not null or three numbers from 0 to 255")
    names = meta["class_names"]
    if names is not None and not (isinstance(names, list) and len(names) == meta["classes"]
                                  and all(isinstance(v, str) for v in names)):
        raise ValueError("\"class_names\" is not null or %d strings" % meta["classes"])
    if not isinstance(meta["source_list"], str):
        raise ValueError("\"source_list\" is not a string")
    seed = meta.get("shuffle_seed")
    if seed is not None and not _is_int(seed, 0, MAX_SEED):
        raise ValueError("\"shuffle_seed\" is %r, not null or an integer from 0 to %d" % (
            seed, MAX_SEED))
    records, size = meta["records"], meta["macrobatch_size"]
    need = -(-records // size)
    if meta["complete"] and records and meta["macrobatches"] != need:
        raise ValueError("%d record%s of %d per macrobatch make%s %d macrobatch%s, not %d" % (
            records, "" if records == 1 else "s", size, "s" if records == 1 else "",
            need, "" if need == 1 else "es", meta["macrobatches"]))


# ---- decoding ---------------------------------------------------------------

def decode(encoding, payload, width, height):
    """A payload as H x W x 3 uint8 RGB; raises ValueError."""
    if encoding == 0:
        if len(payload) != width * height * 3:
            raise ValueError("raw payload of %d bytes for %dx%d" % (len(payload), width, height))
        return np.frombuffer(bytes(payload), np.uint8).reshape(height, width, 3)
    from PIL import Image
    want = "JPEG" if encoding == 1 else "PNG"
    try:
        im = Image.open(io.BytesIO(bytes(payload)))
        if im.format != want:
            raise ValueError("a %s payload holds %s" % (ENCODINGS[encoding], im.format))
        im.load()
    except ValueError:
        raise
    except Exception as e:  # PIL raises many kinds
        raise ValueError("cannot decode the %s payload: %s" % (ENCODINGS[encoding], e))
    if im.size != (width, height):
        raise ValueError("decodes to %dx%d, the item says %dx%d" % (
            im.size[0], im.size[1], width, height))
    return to_rgb(im)


def to_rgb(im):
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode == "CMYK":
        a = np.asarray(im).astype(np.uint32)
        if im.format == "JPEG" and "adobe" in im.info:
            a = 255 - a        # PIL undid Adobe's inversion; we want the stored values
        rgb = (a[..., :3] * a[..., 3:4] + 127) // 255
        return rgb.astype(np.uint8)
    if mode in ("I", "I;16", "I;16B", "I;16L"):
        a = np.asarray(im).astype(np.int64)
        v = ((a * 255 + 32895) >> 16).clip(0, 255).astype(np.uint8)
        return np.repeat(v[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


# ---- the DB -----------------------------------------------------------------

class Dataset:
    def __init__(self, path, verify=True):
        self.path = path
        self._env = self._txn = None
        self._pid = None
        if lmdb is None:
            raise DatasetError("%s: cannot read a dataset DB: the Python module lmdb is "
                               "missing (Debian: python3-lmdb)" % path)
        if not os.path.isdir(path):
            raise DatasetError("%s: %s" % (path, "not a dataset DB (not a directory)"
                                           if os.path.exists(path) else
                                           "no such file or directory"), request=True)
        if not os.path.isfile(os.path.join(path, "data.mdb")):
            raise DatasetError("%s: not a dataset DB (no data.mdb)" % path, request=True)
        txn = self._begin()
        raw = txn.get(b"meta")
        if raw is None:
            raise DatasetError("%s: not a dataset DB (no meta key)" % path)
        try:
            meta = load_meta(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError too
            raise DatasetError("%s: bad meta document: %s" % (path, e))
        if not meta["complete"]:
            raise DatasetError("%s: the DB's meta says it is incomplete" % path)
        self.meta = meta
        self._index(txn, verify)
        self.close()    # each process opens its own environment on first use

    def _begin(self):
        if self._txn is None or self._pid != os.getpid():
            try:
                self._env = lmdb.open(self.path, readonly=True, lock=False, subdir=True,
                                      max_dbs=0, readahead=False)
            except lmdb.Error as e:
                raise DatasetError("%s: %s" % (self.path, e))
            self._txn = self._env.begin(buffers=True)
            self._pid = os.getpid()
        return self._txn

    def close(self):
        if self._txn is not None and self._pid == os.getpid():
            self._txn.abort()
            self._env.close()
        self._env = self._txn = self._pid = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_env"] = d["_txn"] = d["_pid"] = None
        return d

    def _macrobatch(self, txn, i):
        buf = txn.get(b"mb/%08d" % i)
        if buf is None:
            raise DatasetError("%s: macrobatch %d is missing (the meta says %d)" % (
                self.path, i, self.meta["macrobatches"]))
        return buf

    def _index(self, txn, verify):
        meta, n = self.meta, self.meta["records"]
        size = meta["macrobatch_size"]
        # the tables below are as long as the meta says: first see that the
        # DB holds that many keys, so a damaged count cannot make them huge
        held = self._env.stat()["entries"]
        if meta["macrobatches"] > held:
            raise DatasetError("%s: the meta says %d macrobatches, the DB holds %d keys" % (
                self.path, meta["macrobatches"], held))
        self.labels = np.empty(n, np.int32)
        self.widths = np.empty(n, np.int32)
        self.heights = np.empty(n, np.int32)
        self.encodings = np.empty(n, np.uint8)
        self._mb = np.empty(n, np.int64)
        self._off = np.empty(n, np.int64)
        self._len = np.empty(n, np.int64)
        self.names = []
        at = 0
        for i in range(meta["macrobatches"]):
            buf = self._macrobatch(txn, i)
            try:
                first, items = parse_macrobatch(buf) if verify else _parse_fast(buf)
            except ValueError as e:
                raise DatasetError("%s: macrobatch %d: %s" % (self.path, i, e))
            if first != at:
                raise DatasetError("%s: macrobatch %d starts at record %d, expected %d" % (
                    self.path, i, first, at))
            last = i == meta["macrobatches"] - 1
            if len(items) > size or (not last and len(items) != size) or at + len(items) > n:
                raise DatasetError("%s: macrobatch %d holds %d records; the meta says %d "
                                   "records in macrobatches of %d" % (
                                       self.path, i, len(items), n, size))
            for k, (label, h, w, enc, name, poff, plen) in enumerate(items):
                j = at + k
                self.labels[j], self.heights[j], self.widths[j] = label, h, w
                self.encodings[j], self._mb[j], self._off[j], self._len[j] = enc, i, poff, plen
                self.names.append(name)
            at += len(items)
        if at != n:
            raise DatasetError("%s: the macrobatches hold %d records, the meta says %d" % (
                self.path, at, n))

    def __len__(self):
        return self.meta["records"]

    def payload(self, i):
        """Record i's payload as bytes."""
        buf = self._macrobatch(self._begin(), int(self._mb[i]))
        off = int(self._off[i])
        return bytes(buf[off:off + int(self._len[i])])

    def record(self, i):
        if not 0 <= i < len(self):
            raise IndexError("%s: no record %d (it has %d)" % (self.path, i, len(self)))
        return Record(i, self.names[i], int(self.labels[i]), int(self.widths[i]),
                      int(self.heights[i]), int(self.encodings[i]), self.payload(i))

    def __iter__(self):
        for i in range(len(self)):
            yield self.record(i)

    def image(self, i):
        """Record i decoded to H x W x 3 uint8 RGB; DatasetError names it."""
        try:
            return decode(int(self.encodings[i]), self.payload(i), int(self.widths[i]),
                          int(self.heights[i]))
        except ValueError as e:
            raise DatasetError("%s: record %d (%s): %s" % (self.path, i, self.names[i], e))


def _parse_fast(buf):
    """parse_macrobatch without the CRC (verify=False)."""
    n = len(buf)
    if n < 36 or bytes(buf[:8]) != MB_MAGIC:
        raise ValueError("not a macrobatch")
    _, version, count, first, total, flags = MB_HEADER.unpack_from(buf, 0)
    if version != 1 or total != n or flags or not 1 <= count <= MAX_COUNT \
            or 32 + 32 * count > n - 4:
        raise ValueError("bad header")
    items = []
    for i in range(count):
        label, h, w, ch, enc, _, noff, nlen, poff, plen = MB_ITEM.unpack_from(buf, 32 + 32 * i)
        if enc not in ENCODINGS or poff + plen > n - 4 or noff + nlen > n - 4:
            raise ValueError("item %d is out of bounds" % i)
        items.append((label, h, w, enc, bytes(buf[noff:noff + nlen]).decode(
            "utf-8", "surrogateescape"), poff, plen))
    return first, items


# ---- as a program -----------------------------------------------------------

def _tsv(s):
    return (s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def main(argv):
    prog = "mp_dataset.py"
    # A record's name is bytes, not always UTF-8: written back as they were
    # in any locale, as mp-inspect --list does, not a UnicodeEncodeError.
    sys.stdout.reconfigure(errors="surrogateescape")
    usage = "usage: %s list DB | extract DB N OUT.png\n" % prog
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        sys.stdout.write(usage + "\nList a dataset DB in mp-inspect --list's format, or write its\n"
                         "record N, decoded, to OUT.png.\n")
        return 0
    if len(argv) == 3 and argv[1] == "list":
        try:
            ds = Dataset(argv[2])
            out = ["index\tname\tlabel\twidth\theight\tencoding\tbytes\tcrc32"]
            for r in ds:
                out.append("%d\t%s\t%d\t%d\t%d\t%s\t%d\t%08x" % (
                    r.index, _tsv(r.name), r.label, r.width, r.height,
                    ENCODINGS[r.encoding], len(r.payload), crc32(r.payload)))
        except DatasetError as e:
            sys.stderr.write("%s: %s\n" % (prog, e))
            return 1
        sys.stdout.write("\n".join(out) + "\n")
        return 0
    if len(argv) == 5 and argv[1] == "extract":
        try:
            from PIL import Image
        except ImportError:
            sys.stderr.write("%s: cannot import PIL (Debian: python3-pil)\n" % prog)
            return 1
        try:
            ds = Dataset(argv[2])
            n = int(argv[3])
            if not 0 <= n < len(ds):
                raise DatasetError("%s: no record %d (it has %d)" % (argv[2], n, len(ds)))
            Image.fromarray(ds.image(n)).save(argv[4], format="PNG")
        except ValueError:
            sys.stderr.write("%s: extract: \"%s\" is not a record number\n" % (prog, argv[3]))
            return 2
        except DatasetError as e:
            sys.stderr.write("%s: %s\n" % (prog, e))
            return 1
        except OSError as e:
            sys.stderr.write("%s: %s: %s\n" % (prog, argv[4], e.strerror or e))
            return 1
        return 0
    if len(argv) > 1 and argv[1].startswith("-"):
        sys.stderr.write("%s: unknown option %s\n" % (prog, argv[1]))
    sys.stderr.write(usage)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
