#!/usr/bin/python3
"""The straightforward Python way to build an image dataset in LMDB: the
peer that mp-batchwriter is timed against (scripts/bench-batchwriter.sh).

For each image of the list: read the bytes, decode with PIL (which also
validates them), resize to 128x128 bicubic if needed, add its pixels to a
per-channel float64 sum, keep the original bytes when no resize was needed
(otherwise re-encode as JPEG quality 95). Records (name, label, h, w, bytes)
are grouped into macrobatches, pickled, and stored under keys mb/%08d; a
final key "meta" holds JSON with the count, the mean and the class count.
The DB is written in a temporary directory beside DB and renamed to DB when
complete; a failure leaves nothing. An existing DB is refused.

Single process on purpose: this is what a typical user script looks like.
"""

import argparse
import io
import json
import os
import pickle
import shutil
import sys
import tempfile

PROG = "py-batchwriter.py"

try:
    import lmdb
    import numpy as np
    from PIL import Image, UnidentifiedImageError
except ImportError as e:
    # what to install, not a traceback
    sys.stderr.write("%s: cannot import %s (Debian: python3-lmdb python3-numpy python3-pil)\n"
                     % (PROG, e.name))
    sys.exit(1)
SIDE = 128


class Failure(Exception):
    pass


def positive(text):
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000000:
        raise argparse.ArgumentTypeError(
            '"%s" is not a number from 1 to 1000000' % text)
    return value


def read_list(path):
    """Entries (name, label) of a Mini-Places-style list; label -1 if none."""
    entries = []
    try:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                label = -1
                if len(fields) > 1:
                    try:
                        label = int(fields[1], 10)
                    except ValueError:
                        label = -1
                    if label < 0:
                        raise Failure('%s:%d: "%s" is not a label'
                                      % (path, lineno, fields[1]))
                entries.append((fields[0], label))
    except OSError as e:
        raise Failure("%s: %s" % (path, e.strerror))
    if not entries:
        raise Failure("%s: no images listed" % path)
    return entries


def load_record(root, name, label, sums):
    path = os.path.join(root, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except UnidentifiedImageError:
        raise Failure("%s: not an image PIL can read" % path)
    except OSError as e:  # I/O errors and PIL's decode errors
        raise Failure("%s: %s" % (path, e.strerror or e))
    if img.size != (SIDE, SIDE):
        img = img.resize((SIDE, SIDE), Image.BICUBIC)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=95)
        data = out.getvalue()
    sums += np.asarray(img).reshape(-1, 3).sum(axis=0, dtype=np.float64)
    return (name, label, SIDE, SIDE, data)


def write_dataset(root, db, list_path, macrobatch):
    """Writes DB in DB.partial-* beside it, renamed to DB when complete."""
    if os.path.lexists(db):
        raise Failure("%s: already exists (remove it first)" % db)
    entries = read_list(list_path)
    # "db/" names the directory db, beside which the partial one goes
    name = db.rstrip("/") or "/"
    parent = os.path.dirname(name) or "."
    try:
        tmp = tempfile.mkdtemp(prefix=os.path.basename(name) + ".partial-", dir=parent)
    except OSError as e:
        raise Failure("%s: cannot write in %s: %s" % (db, parent, e.strerror or e))
    try:
        mask = os.umask(0)  # mkdtemp's 0700 would outlive the rename
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        meta = write_env(root, tmp, entries, macrobatch)
        os.rename(tmp, db)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, lmdb.Error):
            # lmdb names the temporary directory; name the DB instead
            raise Failure("%s: %s" % (db, str(e).replace(tmp + ": ", "")))
        if isinstance(e, OSError):
            raise Failure("%s: %s" % (db, e.strerror or e))
        raise
    return meta


def write_env(root, path, entries, macrobatch):
    sums = np.zeros(3, dtype=np.float64)
    env = lmdb.open(path, map_size=1 << 30)
    try:
        batch, nbatches = [], 0
        for i, (name, label) in enumerate(entries):
            batch.append(load_record(root, name, label, sums))
            if len(batch) == macrobatch or i == len(entries) - 1:
                with env.begin(write=True) as txn:
                    txn.put(b"mb/%08d" % nbatches,
                            pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))
                batch, nbatches = [], nbatches + 1
        meta = {
            "count": len(entries),
            "mean": (sums / (len(entries) * SIDE * SIDE)).tolist(),
            "classes": max(label for _, label in entries) + 1,
            "macrobatch": macrobatch,
            "macrobatches": nbatches,
        }
        with env.begin(write=True) as txn:
            txn.put(b"meta", json.dumps(meta).encode())
    finally:
        env.close()
    return meta


def main():
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Write the images of LIST into an LMDB dataset of "
                    "pickled macrobatches (a baseline for mp-batchwriter).")
    ap.add_argument("-r", "--root", required=True,
                    help="directory the list's paths are relative to")
    ap.add_argument("-o", "--output", required=True, metavar="DB",
                    help="LMDB environment (a directory) to write; it must "
                         "not exist")
    ap.add_argument("--macrobatch", type=positive, default=1024,
                    metavar="N", help="records per macrobatch (default 1024)")
    ap.add_argument("list", metavar="LIST")
    args = ap.parse_args()
    try:
        meta = write_dataset(args.root, args.output, args.list,
                             args.macrobatch)
    except Failure as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1
    print("%s: wrote %d images in %d macrobatches to %s" %
          (PROG, meta["count"], meta["macrobatches"], args.output),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
