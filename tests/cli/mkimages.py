#!/usr/bin/python3
"""Small images and pixel checks for the command-line tests.

    mkimages.py make KIND OUT [W H] [key=value ...]
        Writes one image. The container follows OUT's extension (.png, .jpg).
        KIND:
          solid       one colour (color=R,G,B)
          noise       uniform random pixels (seed=N)
          gradient    smooth colour ramps (good for lossy round trips)
          bands       vertical bands: colors=R,G,B/R,G,B/... widths=a,b,...
          hbands      horizontal bands: colors=... heights=a,b,...
          edges       a distinct colour at each edge, another inside
          gray-jpeg   8-bit grayscale JPEG (value=V)
          cmyk-jpeg   CMYK JPEG (cmyk=C,M,Y,K as PIL holds them)
          sampled-jpeg  a JPEG of "gradient" with the sampling factors of
                      cjpeg -sample (sample=HxV[,HxV...]; needs cjpeg)
          exif-jpeg   "gradient" as JPEG with an EXIF orientation tag
                      (orientation=N, default 6: turn 90 degrees clockwise)
          gray-png    8-bit grayscale PNG (value=V)
          palette-png palette PNG holding the colours of "bands"
          la-png      grayscale with alpha PNG (value=V)
          bit-png     1-bit PNG, a checkerboard (white where x+y is even)
          png16       16-bit grayscale PNG (value=V16)
          rgba-png    RGBA PNG (color=R,G,B alpha=A)
          interlaced  Adam7-interlaced RGB PNG of noise (seed=N)
          huge-jpeg   a real JPEG whose SOF0 claims DIMxDIM (dim=, 65535)
          huge-png    a real PNG whose IHDR claims DIMxDIM (dim=, 65535;
                      the chunk CRC is fixed)
          scans-jpeg  a valid progressive JPEG of flat grey in 1 + 3 * 63 * 14
                      scans (each AC coefficient of each component alone, by
                      successive approximation), written by hand: each scan
                      costs a pass over every block, so a few hundred KB of
                      it at 8192x8192 take minutes to decode
        quality=Q sets the JPEG quality (default 95).
    mkimages.py many DIR N W H [labels=K] [ext=png|jpg]
        Writes N noise images DIR/imgNNNN.EXT and prints a list on stdout
        ("DIR/imgNNNN.EXT LABEL", labels cycling over K classes; no labels
        without labels=).
    mkimages.py classes DIR N W H K [seed=S]
        Writes N learnable images DIR/clsNNNN.png of K classes (image i has
        class i % K: a class colour, its stripes, and noise) and prints the
        list ("DIR/clsNNNN.png LABEL") on stdout.
    mkimages.py info FILE            "W H MODE"
    mkimages.py pixel FILE X Y       "R G B"
    mkimages.py colors FILE X0 Y0 X1 Y1
        The distinct colours of the region [X0,X1) x [Y0,Y1), sorted, as
        "R,G,B R,G,B ..." on one line.
    mkimages.py pnginfo FILE         "BITDEPTH COLORTYPE INTERLACE" from IHDR
    mkimages.py compare A B          "MAXDIFF MEANDIFF" over RGB; exit 1 if
                                      the sizes differ
    mkimages.py crc FILE             "BYTES CRC32" (CRC32 as 8 hex digits)
    mkimages.py pad FILE N MODE OUT
        What --pad N --pad-fill MODE (zero, edge, mean) should make of FILE,
        written to OUT as PNG.
    mkimages.py batch < COMMANDS
        Runs one command per line of stdin (shell-style words) in one process.
"""

import os
import shlex
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image


def die(msg):
    sys.stderr.write("mkimages.py: %s\n" % msg)
    sys.exit(2)


def triple(text):
    v = tuple(int(x) for x in text.split(","))
    if len(v) not in (3, 4):
        die("bad colour %r" % text)
    return v


def noise(w, h, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def gradient(w, h):
    y, x = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w, 3), dtype=np.float64)
    a[..., 0] = 40 + 160 * x / max(w - 1, 1)
    a[..., 1] = 200 - 150 * y / max(h - 1, 1)
    a[..., 2] = 90 + 60 * (x + y) / max(w + h - 2, 1)
    return np.round(a).astype(np.uint8)


def bands(w, h, colors, widths):
    a = np.zeros((h, w, 3), dtype=np.uint8)
    x = 0
    for c, bw in zip(colors, widths):
        a[:, x:x + bw] = c
        x += bw
    if x != w:
        die("band widths add up to %d, not %d" % (x, w))
    return a


def edges(w, h):
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, :] = (128, 128, 128)
    a[0, :] = (255, 0, 0)       # top
    a[h - 1, :] = (0, 0, 255)   # bottom
    a[:, 0] = (0, 255, 0)       # left
    a[:, w - 1] = (255, 255, 0)  # right
    return a


def save(img, out, quality):
    if out.endswith((".jpg", ".jpeg")):
        img.save(out, "JPEG", quality=quality)
    elif out.endswith(".png"):
        img.save(out, "PNG")
    else:
        die("%s: unknown extension" % out)


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def write_adam7(out, a):
    """An interlaced 8-bit RGB PNG, written by hand (PIL cannot)."""
    h, w, _ = a.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
              (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        sub = a[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in sub:
            raw.append(0)  # filter: none
            raw += row.tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)) +
            png_chunk(b"IEND", b""))
    with open(out, "wb") as f:
        f.write(data)


def patch_jpeg_sof(out, dim):
    data = bytearray(open(out, "rb").read())
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            die("%s: lost in the JPEG markers" % out)
        marker = data[i + 1]
        seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            # length(2) precision(1) height(2) width(2)
            data[i + 5:i + 9] = struct.pack(">HH", dim, dim)
            open(out, "wb").write(data)
            return
        i += 2 + seglen
    die("%s: no SOF marker" % out)


def patch_png_ihdr(out, dim):
    data = bytearray(open(out, "rb").read())
    if data[12:16] != b"IHDR":
        die("%s: IHDR is not the first chunk" % out)
    data[16:24] = struct.pack(">II", dim, dim)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    open(out, "wb").write(data)


def jpeg_segment(marker, payload):
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


class JpegBits:
    """Entropy-coded bits, MSB first, 0xFF stuffed, padded with ones."""
    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, v, n):
        for i in range(n - 1, -1, -1):
            self.acc = (self.acc << 1) | ((v >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def done(self):
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def write_many_scans_jpeg(out, w, h):
    blocks = ((w + 7) // 8) * ((h + 7) // 8)
    data = bytearray(b"\xff\xd8")
    data += jpeg_segment(0xDB, bytes([0]) + bytes([1] * 64))
    data += jpeg_segment(0xC2, struct.pack(">BHHB", 8, h, w, 3) +
                         b"".join(bytes([c + 1, 0x11, 0]) for c in range(3)))
    # DC table 0: category 0 only, code "0"; AC table 0: EOBn (n << 4),
    # n = 0..14, 4-bit codes
    data += jpeg_segment(0xC4, bytes([0x00, 1] + [0] * 15 + [0]))
    data += jpeg_segment(0xC4, bytes([0x10, 0, 0, 0, 15] + [0] * 12 +
                                     [n << 4 for n in range(15)]))
    # the DC scan, interleaved: every block's difference 0
    data += jpeg_segment(0xDA, bytes([3, 1, 0, 2, 0, 3, 0, 0, 0, 0]))
    bits = JpegBits()
    for _ in range(3 * blocks):
        bits.put(0, 1)
    data += bits.done()
    # every AC scan: all blocks zero, as end-of-band runs of up to 32767
    bits, left = JpegBits(), blocks
    while left:
        run = min(left, 32767)
        n = run.bit_length() - 1
        bits.put(n, 4)
        bits.put(run - (1 << n), n)
        left -= run
    runs = bits.done()
    steps = [(0, 13)] + [(a, a - 1) for a in range(13, 0, -1)]
    for c in range(3):
        for k in range(1, 64):
            for ah, al in steps:
                data += jpeg_segment(0xDA, bytes([1, c + 1, 0, k, k, (ah << 4) | al]))
                data += runs
    data += b"\xff\xd9"
    with open(out, "wb") as f:
        f.write(data)


def make(args):
    if len(args) < 2:
        die("make KIND OUT [W H] [key=value ...]")
    kind, out = args[0], args[1]
    rest = args[2:]
    w = h = 16
    if len(rest) >= 2 and rest[0].isdigit() and rest[1].isdigit():
        w, h = int(rest[0]), int(rest[1])
        rest = rest[2:]
    opt = dict(r.split("=", 1) for r in rest)
    quality = int(opt.get("quality", "95"))
    if kind == "solid":
        c = triple(opt.get("color", "200,100,50"))
        save(Image.new("RGB", (w, h), c), out, quality)
    elif kind == "noise":
        save(Image.fromarray(noise(w, h, int(opt.get("seed", "1")))), out, quality)
    elif kind == "gradient":
        save(Image.fromarray(gradient(w, h)), out, quality)
    elif kind == "bands":
        colors = [triple(c) for c in opt["colors"].split("/")]
        widths = [int(x) for x in opt["widths"].split(",")]
        save(Image.fromarray(bands(w, h, colors, widths)), out, quality)
    elif kind == "hbands":
        colors = [triple(c) for c in opt["colors"].split("/")]
        heights = [int(x) for x in opt["heights"].split(",")]
        a = bands(h, w, colors, heights).transpose(1, 0, 2)
        save(Image.fromarray(np.ascontiguousarray(a)), out, quality)
    elif kind == "edges":
        save(Image.fromarray(edges(w, h)), out, quality)
    elif kind == "gray-jpeg":
        Image.new("L", (w, h), int(opt.get("value", "90"))).save(
            out, "JPEG", quality=quality)
    elif kind == "cmyk-jpeg":
        c = triple(opt.get("cmyk", "0,255,255,0"))
        Image.new("CMYK", (w, h), c).save(out, "JPEG", quality=quality)
    elif kind == "sampled-jpeg":
        # PIL writes 4:4:4, 4:2:2 and 4:2:0 only; cjpeg writes any factors.
        with tempfile.NamedTemporaryFile(suffix=".ppm") as ppm:
            Image.fromarray(gradient(w, h)).save(ppm.name, "PPM")
            subprocess.run(["cjpeg", "-quality", str(quality), "-sample", opt["sample"],
                            "-outfile", out, ppm.name], check=True)
    elif kind == "exif-jpeg":
        exif = Image.Exif()
        exif[0x0112] = int(opt.get("orientation", "6"))
        Image.fromarray(gradient(w, h)).save(out, "JPEG", quality=quality,
                                             exif=exif.tobytes())
    elif kind == "gray-png":
        Image.new("L", (w, h), int(opt.get("value", "77"))).save(out, "PNG")
    elif kind == "palette-png":
        colors = [triple(c) for c in opt["colors"].split("/")]
        widths = [int(x) for x in opt["widths"].split(",")]
        img = Image.fromarray(bands(w, h, colors, widths))
        img.quantize(colors=len(colors)).save(out, "PNG")
        if Image.open(out).mode != "P":
            die("%s: not a palette PNG" % out)
    elif kind == "la-png":
        Image.new("LA", (w, h), (int(opt.get("value", "150")), 20)).save(out, "PNG")
    elif kind == "bit-png":
        y, x = np.mgrid[0:h, 0:w]
        Image.fromarray(((x + y) % 2 == 0)).convert("1").save(out, "PNG")
        if Image.open(out).mode != "1":
            die("%s: not a 1-bit PNG" % out)
    elif kind == "png16":
        v = int(opt.get("value", str(257 * 100)))
        a = np.full((h, w), v, dtype=np.uint16)
        Image.fromarray(a).save(out, "PNG")
        if Image.open(out).mode not in ("I;16", "I"):
            die("%s: not a 16-bit PNG" % out)
    elif kind == "rgba-png":
        c = triple(opt.get("color", "10,200,30"))[:3]
        Image.new("RGBA", (w, h), c + (int(opt.get("alpha", "100")),)).save(out, "PNG")
    elif kind == "interlaced":
        a = noise(w, h, int(opt.get("seed", "1")))
        write_adam7(out, a)
        back = np.asarray(Image.open(out).convert("RGB"))
        if Image.open(out).info.get("interlace") != 1 or not np.array_equal(back, a):
            die("%s: interlaced PNG did not read back" % out)
    elif kind == "huge-jpeg":
        save(Image.fromarray(noise(w, h, 3)), out, quality)
        patch_jpeg_sof(out, int(opt.get("dim", "65535")))
    elif kind == "scans-jpeg":
        write_many_scans_jpeg(out, w, h)
        back = np.asarray(Image.open(out).convert("RGB"))
        if back.shape != (h, w, 3) or int(back.min()) != 128 or int(back.max()) != 128:
            die("%s: the many-scans JPEG did not read back as flat grey" % out)
    elif kind == "huge-png":
        Image.fromarray(noise(w, h, 3)).save(out, "PNG")
        patch_png_ihdr(out, int(opt.get("dim", "65535")))
    else:
        die("unknown kind %r" % kind)


def many(args):
    d, n, w, h = args[0], int(args[1]), int(args[2]), int(args[3])
    opt = dict(r.split("=", 1) for r in args[4:])
    ext = opt.get("ext", "png")
    labels = int(opt["labels"]) if "labels" in opt else 0
    os.makedirs(d, exist_ok=True)
    lines = []
    for i in range(n):
        p = "%s/img%04d.%s" % (d, i, ext)
        img = Image.fromarray(noise(w, h, 1000 + i))
        save(img, p, 90)
        lines.append("%s %d" % (p, i % labels) if labels else p)
    sys.stdout.write("\n".join(lines) + "\n")


PALETTE = [(200, 40, 40), (40, 180, 60), (50, 70, 210), (220, 200, 40),
           (160, 60, 190), (40, 190, 190), (230, 130, 30), (120, 120, 120)]


def classes(args):
    d, n, w, h, k = args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4])
    opt = dict(r.split("=", 1) for r in args[5:])
    rng = np.random.default_rng(int(opt.get("seed", "7")))
    os.makedirs(d, exist_ok=True)
    lines = []
    for i in range(n):
        label = i % k
        base = np.array(PALETTE[label % len(PALETTE)], np.float64)
        a = np.empty((h, w, 3))
        a[:, :] = base
        stripes = (np.arange(w) // 2 % 2) if label % 2 else (np.arange(h)[:, None] // 2 % 2)
        a += 30.0 * stripes[..., None] if label % 2 else 30.0 * stripes[:, :, None]
        a += rng.uniform(-40, 40, a.shape)
        p = "%s/cls%04d.png" % (d, i)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p, "PNG")
        lines.append("%s %d" % (p, label))
    sys.stdout.write("\n".join(lines) + "\n")


def rgb(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int64)


def padded(args):
    """What --pad N --pad-fill MODE should make of an image already at size."""
    a = rgb(args[0]).astype(np.uint8)
    n, mode = int(args[1]), args[2]
    if mode == "edge":
        out = np.pad(a, ((n, n), (n, n), (0, 0)), mode="edge")
    else:
        if mode == "zero":
            fill = (0, 0, 0)
        elif mode == "mean":
            count = a.shape[0] * a.shape[1]
            sums = a.reshape(-1, 3).astype(np.int64).sum(axis=0)
            fill = tuple(int((s + count // 2) // count) for s in sums)
        else:
            die("pad mode %r" % mode)
        out = np.empty((a.shape[0] + 2 * n, a.shape[1] + 2 * n, 3), np.uint8)
        out[:, :] = fill
        out[n:n + a.shape[0], n:n + a.shape[1]] = a
    Image.fromarray(out).save(args[3], "PNG")


def run(cmd, args):
    if cmd == "make":
        make(args)
    elif cmd == "many":
        many(args)
    elif cmd == "classes":
        classes(args)
    elif cmd == "info":
        img = Image.open(args[0])
        print(img.width, img.height, img.mode)
    elif cmd == "pixel":
        a = rgb(args[0])
        x, y = int(args[1]), int(args[2])
        print(*a[y, x])
    elif cmd == "colors":
        a = rgb(args[0])
        x0, y0, x1, y1 = (int(v) for v in args[1:5])
        region = a[y0:y1, x0:x1].reshape(-1, 3)
        print(" ".join("%d,%d,%d" % c for c in sorted(set(map(tuple, region.tolist())))))
    elif cmd == "compare":
        a, b = rgb(args[0]), rgb(args[1])
        if a.shape != b.shape:
            print("size %s vs %s" % (a.shape[:2], b.shape[:2]))
            sys.exit(1)
        d = np.abs(a - b)
        print(int(d.max()), "%.3f" % d.mean())
    elif cmd == "pnginfo":
        data = open(args[0], "rb").read(29)
        if data[12:16] != b"IHDR":
            die("%s: not a PNG" % args[0])
        print(data[24], data[25], data[28])
    elif cmd == "crc":
        data = open(args[0], "rb").read()
        print(len(data), "%08x" % zlib.crc32(data))
    elif cmd == "pad":
        padded(args)
    elif cmd == "batch":
        # One command per line on stdin: saves a Python start per image.
        for line in sys.stdin:
            words = shlex.split(line)
            if words:
                run(words[0], words[1:])
    else:
        die("unknown command %r" % cmd)


def main():
    if len(sys.argv) < 2:
        die("usage: see the comment at the top")
    run(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
