#!/usr/bin/python3
"""Damages a file one byte at a time and checks that mp-inspect --verify
reports each damaged copy: exit status 1, the file named on stderr, a
report that says FAILED on stdout (never "OK"), no crash and no hang.

    damage.py MP_INSPECT KIND FILE

KIND says how FILE is laid out, so that every region of it is damaged:
  stream   a dataset stream: the header, each frame's kind, length, CRC
           and payload; in a macrobatch its header, item table, names,
           payloads and CRC
  weights  a safetensors file of format_version 2: the length field, the
           header CRC (its key and value), the metadata (the data CRC's key
           and value included), the tensor entries, the tensor data
  db       a dataset DB of one leaf page: the bytes of data.mdb that
           LMDB reads (the live meta page's magic, version and root, the
           leaf page's header, nodes and keys, the meta document and the
           macrobatch values)

Each chosen byte is flipped (xor 0xff), and for a stream and a weights
file the file is also cut at many lengths. Offsets are sampled so that
each region is hit at its edges and along its length. Regions that the
formats do not protect are left alone: none since format_version 2, whose
header CRC (mp-weights(5)) and meta document CRC (mp-dataset(5)) cover
the metadata and the meta document. Prints each copy that was not
reported and exits 1 if there was one.
"""

import json
import os
import shutil
import struct
import subprocess
import sys


def spread(lo, hi, n):
    """Up to n offsets from lo to hi - 1, both ends included."""
    if hi <= lo:
        return []
    if hi - lo <= n:
        return list(range(lo, hi))
    return sorted({lo + (hi - 1 - lo) * i // (n - 1) for i in range(n)})


def stream_offsets(d):
    offs = list(range(16))
    pos = 16
    while pos + 8 <= len(d):
        kind, n = struct.unpack_from("<II", d, pos)
        offs += range(pos, pos + 8)
        body = pos + 8
        if kind == 2:  # a macrobatch: header, items, names, payloads, CRC
            count = struct.unpack_from("<I", d, body + 12)[0]
            items = body + 32
            offs += range(body, items)
            names = items + 32 * count
            offs += spread(items, names, 24)
            first_payload = struct.unpack_from("<I", d, items + 24)[0]
            offs += spread(names, body + first_payload, 6)
            offs += spread(body + first_payload, body + n - 4, 12)
            offs += range(body + n - 4, body + n)
        else:
            offs += spread(body, body + n, 12)
        offs += range(body + n, body + n + 4)  # the frame's CRC
        pos = body + n + 4
    return offs


def weights_offsets(d):
    n = struct.unpack_from("<Q", d, 0)[0]
    header = d[8:8 + n]
    offs = list(range(8))
    # the header CRC's key and value, at the start of the header
    hcrc = b'{"__metadata__":{"header_crc32":"'
    assert header.startswith(hcrc)
    offs += range(8 + 17, 8 + len(hcrc) + 8)
    # the metadata (the mean, bn_eps, ...), then from the first tensor
    # entry to the end of the header; the data CRC's key and value too
    first = [k for k in json.loads(header) if k != "__metadata__"][0]
    entries = header.index(json.dumps(first).encode() + b":{")
    offs += spread(8 + len(hcrc) + 8, 8 + entries, 40)
    offs += spread(8 + entries, 8 + n, 120)
    crc = header.index(b'"crc32":"')
    offs += range(8 + crc, 8 + crc + 17)
    offs += spread(8 + n, len(d), 100)
    return offs


def db_offsets(path):
    """The live parts of a DB of depth 1 (one leaf page): LMDB keeps the
    pages of earlier transactions in the file, and what is damaged there
    is never read."""
    d = open(os.path.join(path, "data.mdb"), "rb").read()
    psize = 4096
    # the meta page of the latest transaction: magic, version, the main
    # database's depth and root page (page header 16 bytes, then mm_magic,
    # mm_version, mm_address, mm_mapsize, mm_dbs[2] of 48 bytes, mm_last_pg,
    # mm_txnid)
    live = max((0, psize), key=lambda p: struct.unpack_from("<Q", d, p + 144)[0])
    offs = list(range(live + 16, live + 24))
    offs += range(live + 128, live + 132)  # the main database's root
    root = struct.unpack_from("<Q", d, live + 128)[0] * psize
    # the leaf page: its flags, its end of node pointers (lower) and the
    # pointers, each node's size, flags, key size and key, and each value,
    # the meta document's too; not the fields LMDB does not read (a page's
    # own number, pad and upper bound, the high byte of the flags)
    lower = struct.unpack_from("<H", d, root + 12)[0]
    offs += [root + 10, root + 12, root + 13]
    offs += range(root + 16, root + lower)
    for i in range(16, lower, 2):
        node = root + struct.unpack_from("<H", d, root + i)[0]
        lo, hi, flags, ksize = struct.unpack_from("<HHHH", d, node)
        size = lo | hi << 16
        offs += [o for o in range(node, node + 8 + ksize) if o != node + 5]
        value = node + 8 + ksize
        if flags & 1:  # F_BIGDATA: the value is on overflow pages
            offs += range(value, value + 8)
            # past the overflow page's header, which readers skip
            value = struct.unpack_from("<Q", d, value)[0] * psize + 16
        offs += spread(value, value + size, 24)
    return offs, d


def run(inspect, target, what, failures):
    try:
        p = subprocess.run([inspect, "--verify", target], capture_output=True,
                           timeout=20)
    except subprocess.TimeoutExpired:
        failures.append("%s: hangs" % what)
        return
    err = p.stderr.decode("utf-8", "replace")
    if (p.returncode != 1 or target not in err or b": OK" in p.stdout
            or not p.stdout.startswith(target.encode() + b": FAILED")):
        failures.append("%s: exit %d, stdout %r, stderr %r"
                        % (what, p.returncode, p.stdout[-100:], err[-200:]))


def main():
    inspect, kind, path = sys.argv[1:4]
    failures = []
    if kind == "db":
        offs, d = db_offsets(path)
        copy = "damaged.db"
        shutil.rmtree(copy, ignore_errors=True)
        os.mkdir(copy)
        for o in sorted(set(offs)):
            b = bytearray(d)
            b[o] ^= 0xff
            with open(os.path.join(copy, "data.mdb"), "wb") as f:
                f.write(b)
            run(inspect, copy, "data.mdb byte %d flipped" % o, failures)
        shutil.rmtree(copy)
    else:
        d = open(path, "rb").read()
        offs = stream_offsets(d) if kind == "stream" else weights_offsets(d)
        copy = "damaged-" + os.path.basename(path)
        for o in sorted(set(offs)):
            b = bytearray(d)
            b[o] ^= 0xff
            with open(copy, "wb") as f:
                f.write(b)
            run(inspect, copy, "byte %d flipped" % o, failures)
        for n in sorted(set(list(range(0, 17)) + spread(17, len(d), 60))):
            with open(copy, "wb") as f:
                f.write(d[:n])
            run(inspect, copy, "cut at %d" % n, failures)
        os.unlink(copy)
    for f in failures:
        print(f)
    sys.exit(1 if failures else 0)


main()
