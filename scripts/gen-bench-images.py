#!/usr/bin/python3
"""Write synthetic 128x128 RGB JPEGs that cost about as much to store and
decode as small photographs, for timing the data path.

Each image is a 1/f ("pink") noise field per channel, mixed into colour
with a dominant luminance component (as in natural images), laid over a
smooth two-colour gradient, with a few soft-edged textured shapes on top.
At quality 90 this gives files of roughly 4-8 KB, like Mini-Places.

Layout (as Mini-Places):
    OUT_DIR/train/<c>/<class>/NNNNNNNN.jpg   numbered per class from 1
    OUT_DIR/train.txt                        "train/<c>/<class>/N.jpg label"
    OUT_DIR/categories.txt                   "/<c>/<class> label"
Labels cycle over the classes. The output is the same for the same seed.
"""

import argparse
import io
import multiprocessing
import os
import sys

PROG = "gen-bench-images.py"

try:
    import numpy as np
    from PIL import Image
except ImportError as e:
    # what to install, not a traceback
    sys.stderr.write("%s: cannot import %s (Debian: python3-numpy python3-pil)\n"
                     % (PROG, e.name))
    sys.exit(1)
SIDE = 128
QUALITY = 90


def number(lo, hi):
    # argparse puts "argument NAME:" in front of the message.
    def parse(text):
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(
                '"%s" is not a number from %d to %d' % (text, lo, hi))
        return value
    return parse


def class_name(k):
    # A Mini-Places-like two-level name: the directory letter cycles a..z.
    letter = chr(ord("a") + k % 26)
    return "%s/%s_scene%03d" % (letter, letter, k)


# Frequency grid shared by every image (rfft2 layout).
_FY = np.fft.fftfreq(SIDE)[:, None]
_FX = np.fft.rfftfreq(SIDE)[None, :]
_FREQ = np.sqrt(_FX * _FX + _FY * _FY)
_FREQ[0, 0] = 1.0
_YY, _XX = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) / (SIDE - 1)


def pink_noise(rng, channels, alpha):
    """Zero-mean, unit-variance noise with a 1/f**alpha amplitude spectrum."""
    amp = _FREQ ** -alpha
    amp[0, 0] = 0.0
    shape = (channels,) + amp.shape
    spec = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * amp
    field = np.fft.irfft2(spec, s=(SIDE, SIDE))
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    return field


def make_image(seed, index):
    rng = np.random.default_rng([seed, index])

    # Background: a smooth gradient between two colours in a random direction.
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * _XX + np.sin(angle) * _YY
    t = (t - t.min()) / (np.ptp(t) + 1e-12)
    c0 = rng.uniform(20, 235, 3)
    c1 = rng.uniform(20, 235, 3)
    img = c0[:, None, None] * (1 - t) + c1[:, None, None] * t

    # Texture: luminance-dominant mix of three pink-noise fields.
    noise = pink_noise(rng, 3, rng.uniform(1.0, 1.4))
    tint = rng.uniform(0.8, 1.2, 3)
    chroma = rng.normal(0, 0.2, (3, 2))
    lum_contrast = rng.uniform(15, 35)
    img += lum_contrast * (tint[:, None, None] * noise[0]
                           + np.tensordot(chroma, noise[1:], axes=1))

    # A few soft-edged shapes (ellipses and boxes), each with its own texture.
    for _ in range(rng.integers(2, 6)):
        cx, cy = rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.08, 0.35, 2)
        dx = (_XX - cx) / rx
        dy = (_YY - cy) / ry
        if rng.random() < 0.5:
            dist = np.sqrt(dx * dx + dy * dy) - 1.0
        else:
            dist = np.maximum(np.abs(dx), np.abs(dy)) - 1.0
        soft = rng.uniform(0.03, 0.25)
        mask = 1.0 / (1.0 + np.exp(np.clip(dist / soft, -50, 50)))
        colour = rng.uniform(0, 255, 3)
        tex = pink_noise(rng, 1, rng.uniform(1.0, 1.6))[0]
        fill = colour[:, None, None] + rng.uniform(8, 25) * tex
        img = img * (1 - mask) + fill * mask

    pixels = np.clip(img, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def work(job):
    seed, index, path = job
    data = make_image(seed, index)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return len(data)


def main():
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Write COUNT synthetic 128x128 photograph-like JPEGs "
                    "and a Mini-Places-style train.txt.")
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("count", metavar="COUNT",
                    type=number(1, 10000000))
    ap.add_argument("--seed", type=number(0, 2**31 - 1), default=1)
    ap.add_argument("--classes", type=number(1, 100000),
                    default=100)
    ap.add_argument("-j", "--jobs", type=number(1, 1024),
                    default=os.cpu_count() or 1,
                    help="worker processes (default: all cores); "
                         "the output does not depend on it")
    args = ap.parse_args()

    lines, jobs = [], []
    try:
        for k in range(args.classes):
            os.makedirs(os.path.join(args.out_dir, "train", class_name(k)),
                        exist_ok=True)
        for i in range(args.count):
            label = i % args.classes
            rel = "train/%s/%08d.jpg" % (class_name(label),
                                          i // args.classes + 1)
            lines.append("%s %d\n" % (rel, label))
            jobs.append((args.seed, i, os.path.join(args.out_dir, rel)))

        if args.jobs > 1:
            with multiprocessing.Pool(args.jobs) as pool:
                sizes = pool.map(work, jobs, chunksize=64)
        else:
            sizes = [work(job) for job in jobs]

        for name, text in (
                ("train.txt", "".join(lines)),
                ("categories.txt", "".join(
                    "/%s %d\n" % (class_name(k), k)
                    for k in range(args.classes)))):
            path = os.path.join(args.out_dir, name)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
    except OSError as e:
        name = e.filename if e.filename else args.out_dir
        print("%s: %s: %s" % (PROG, name, e.strerror), file=sys.stderr)
        return 1

    print("%s: wrote %d images in %d classes to %s, mean file size %.0f "
          "bytes" % (PROG, args.count, args.classes, args.out_dir,
                     sum(sizes) / len(sizes)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
