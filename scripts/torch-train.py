#!/usr/bin/python3
"""torch-train.py: the PyTorch peer of mp-train.

Trains the toolkit's residual network (mp_resnet.py) with PyTorch 1.13 on
the same dataset DBs, with the same options, defaults, schedule, optimizer,
augmentation and budget as mp-train, and writes the same training log
(OUT_DIR/train.log) and a weights file the toolkit reads
(OUT_DIR/weights.safetensors), so the two can be compared on accuracy and
speed (scripts/peer-train.sh does that).

What is the same as mp-train:
  - the data order and every random draw of the augmentation: the epoch's
    shuffle and each record's scale, crop origin and flip come from the
    toolkit's generator (xoshiro256**, seeded from seed, epoch and record as
    mp_augment_rng does), so both see the same crops in the same batches;
    incomplete last batches are dropped;
  - the transforms: the short side to s, the long side to
    floor(long * s / short + 0.5) (at least the crop), the crop, the flip,
    the mean subtracted, CHW floats on the 0..255 scale; evaluation resizes
    the whole image to crop x crop;
  - the learning rate of every step (mp_schedule_lr), the optimizer
    v = m v - lr (g + wd w), w += v on every learned tensor, BN gammas and
    betas included, BN momentum 0.9 and eps 1e-3 (neon's sense), label
    smoothing target (1 - s) onehot + s / classes, the log and its formats.
What differs:
  - resampling: PIL's bicubic (a = -0.5, antialiased when shrinking, like
    ours) rounds the horizontal pass to 8 bits and uses fixed-point weights,
    where mp_image_resize keeps floats between the passes: a pixel may
    differ by a level or so;
  - the initial weights: PyTorch's generator draws the same distribution
    (Kaiming normal, std sqrt(2 / fan_in); BN 1 and 0), not the same
    numbers; --init FILE starts from a weights file instead (for example
    one written by the toolkit's resnet_init oracle for the same seed);
  - arithmetic: PyTorch's convolutions and reductions sum in other orders.

Exit status, as mp-train's: 0 done, 1 damaged data or a failure while
running, 2 options or data that do not fit (a path that is no dataset DB,
a training set without labels or of one class, a validation set of other
classes, too few records for a batch), 130 interrupted.
"""
import json
import math
import os
import re
import sys
import time

PROG = "torch-train.py"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

LOG_HEADER = ("kind\tepoch\tstep\tlr\tloss\ttrain_top1_err\ttrain_top5_err\tval_loss\t"
              "val_top1_err\tval_top5_err\timages_per_s\telapsed_s\n")

USAGE = "usage: %s -d TRAIN_DB [-v VAL_DB] -o OUT_DIR [options]" % PROG

HELP = USAGE + """
Trains the toolkit's residual network with PyTorch, as mp-train does.
Defaults are the reference recipe, the same as mp-train's.

data
  -d, --train DB          training set (dataset DB)
  -v, --val DB            validation set, evaluated after every epoch
      --crop N            training crop and input size (default 112)
      --scale-min N       shortest side, smallest random scale (default 128)
      --scale-max N       shortest side, largest random scale (default 240)
      --mean R,G,B        the mean to subtract (default: the training set's)
      --classes N         number of classes (default: the training set's)
network
      --depth N           residual blocks per stage (default 9)
      --widths LIST       stage widths (default 32,64,128,256)
      --shortcut A|B      zero-padding or projection shortcuts (default A)
      --stem-kernel K     stem convolution size (default 3)
      --stem-stride S     stem stride (default 2)
      --no-fc-bn          no batch normalization after the classifier
      --init FILE         start from these weights (default: Kaiming init)
optimizer and schedule
      --batch N           images per step (default 128)
      --epochs N          epochs (default 80)
      --lr X              learning rate (default 0.1)
      --momentum X        momentum (default 0.9)
      --wd X              weight decay (default 0.0005)
      --label-smoothing X label smoothing (default 0)
      --lr-policy P       step or cosine (default step)
      --schedule LIST     step: epochs where the rate drops (default 40,70; none)
      --gamma X           step: factor at each drop (default 0.1)
      --warmup EPOCHS     linear warmup, may be fractional (default 0)
run
  -o, --output DIR        where weights.safetensors and train.log go
      --force             start over in an OUT_DIR that holds a run
      --seed N            initialisation, data order, augmentation (default 1)
      --threads N         torch.set_num_threads (default: all cores)
      --loader-threads N  DataLoader worker processes, 0 for none (default 2)
      --max-steps N       stop after N steps in all, as at the end (smoke runs)
      --log-every N       a log row every N steps (default 50; 0: epochs only)
  -q, --quiet             no summaries
      --check-options     check the options, then exit 0 (before a long run)
  -h, --help              this help
"""


def warn(msg):
    sys.stderr.write("%s: %s\n" % (PROG, msg))


def die(code, msg):
    warn(msg)
    sys.exit(code)


# ---- options ----------------------------------------------------------------

# name: (takes an argument, default)
OPTIONS = {
    "train": (1, None), "val": (1, None), "output": (1, None),
    "crop": (1, "112"), "scale-min": (1, "128"), "scale-max": (1, "240"),
    "mean": (1, None), "classes": (1, None),
    "depth": (1, "9"), "widths": (1, "32,64,128,256"), "shortcut": (1, "A"),
    "stem-kernel": (1, "3"), "stem-stride": (1, "2"), "no-fc-bn": (0, False),
    "init": (1, None),
    "batch": (1, "128"), "epochs": (1, "80"), "lr": (1, "0.1"), "momentum": (1, "0.9"),
    "wd": (1, "0.0005"), "label-smoothing": (1, "0"), "lr-policy": (1, "step"),
    "schedule": (1, "40,70"), "gamma": (1, "0.1"), "warmup": (1, "0"),
    "force": (0, False), "seed": (1, "1"), "threads": (1, None),
    "loader-threads": (1, "2"), "max-steps": (1, None), "log-every": (1, "50"),
    "quiet": (0, False), "help": (0, False), "check-options": (0, False),
}
SHORT = {"d": "train", "v": "val", "o": "output", "q": "quiet", "h": "help"}


def usage():
    sys.stderr.write("%s\nTry '%s --help' for the options.\n" % (USAGE, PROG))
    sys.exit(2)


def getopt(argv):
    """GNU-style: -d X, -dX, --name X, --name=X, unique prefixes, --."""
    got = {k: v[1] for k, v in OPTIONS.items()}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            if i < len(argv):
                warn("unexpected argument \"%s\"" % argv[i])
                usage()
            break
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            match = [k for k in OPTIONS if k == name] or \
                [k for k in OPTIONS if k.startswith(name)]
            if len(match) != 1:
                warn("%s option '--%s'" % ("ambiguous" if match else "unrecognized", name))
                usage()
            name = match[0]
            if OPTIONS[name][0]:
                if not eq:
                    if i >= len(argv):
                        warn("option '--%s' requires an argument" % name)
                        usage()
                    val = argv[i]
                    i += 1
                got[name] = val
            elif eq:
                warn("option '--%s' doesn't allow an argument" % name)
                usage()
            else:
                got[name] = True
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                c = a[j]
                j += 1
                if c not in SHORT:
                    warn("invalid option -- '%s'" % c)
                    usage()
                name = SHORT[c]
                if OPTIONS[name][0]:
                    if j < len(a):
                        val = a[j:]
                    elif i < len(argv):
                        val = argv[i]
                        i += 1
                    else:
                        warn("option requires an argument -- '%s'" % c)
                        usage()
                    got[name] = val
                    break
                got[name] = True
        else:
            warn("unexpected argument \"%s\"" % a)
            usage()
    return got


# What mp-train's parsers take, and nothing more: ASCII digits (Python's
# int and float also take "1_0", "²" and other Unicode digits, and spaces
# around), an optional sign; no leading blank and no hexadecimal, which
# strtol and strtod alone would take (mp_number_start).
_C_INT = re.compile("[+-]?[0-9]+")
_C_FLOAT = re.compile("[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?")


def _c_number(text, integer):
    """The value of text as mp_parse_long (strtol, base 10) or
    mp_parse_double (strtod) reads it whole, or None."""
    if not isinstance(text, str):
        return None
    if integer:
        return int(text) if _C_INT.fullmatch(text) else None
    if not _C_FLOAT.fullmatch(text):
        return None
    v = float(text)
    return v if math.isfinite(v) else None


def _number(opt, text, lo, hi, integer):
    """The strtonum-like check of mp-train's parsers (mp_parse_long/double)."""
    v = _c_number(text, integer)
    if v is None or not (lo <= v <= hi):
        fmt = "%d" if integer else "%g"   # mp-train's %ld and %g
        die(2, ("%s: \"%s\" is not a number from " + fmt + " to " + fmt) % (opt, text, lo, hi))
    return v


def _list(opt, text, lo, hi, nmin, nmax, integer=False):
    """mp_parse_double_list, or with integer mp_parse_long_list."""
    parts = text.split(",")
    if len(parts) < nmin or len(parts) > nmax:
        die(2, "%s: \"%s\" has %d entries, expected %s" % (
            opt, text, len(parts), nmin if nmin == nmax else "%d to %d" % (nmin, nmax)))
    out = []
    for k, p in enumerate(parts):
        v = _c_number(p, integer)
        if v is None or not (lo <= v <= hi):
            die(2, "%s: \"%s\": entry %d is not a %s from %g to %g" % (
                opt, text, k + 1, "whole number" if integer else "number", lo, hi))
        out.append(v)
    return out


def _keyword(opt, text, words):
    if text not in words:
        die(2, "%s: \"%s\" is not one of %s" % (opt, text, "|".join(words)))
    return text


class Opts:
    pass


def parse_options(argv):
    g = getopt(argv)
    if g["help"]:
        sys.stdout.write(HELP)
        sys.exit(0)
    o = Opts()
    o.train_db, o.val_db, o.out_dir = g["train"], g["val"], g["output"]
    o.crop = _number("--crop", g["crop"], 1, 4096, True)
    o.scale_min = _number("--scale-min", g["scale-min"], 1, 65535, True)
    o.scale_max = _number("--scale-max", g["scale-max"], 1, 65535, True)
    o.mean = _list("--mean", g["mean"], 0, 255, 3, 3) if g["mean"] is not None else None
    # an empty value is refused, as mp-train does, not taken for the default
    o.classes = (_number("--classes", g["classes"], 2, 65536, True)
                 if g["classes"] is not None else 0)
    o.depth = _number("--depth", g["depth"], 1, 1000, True)
    o.widths = tuple(_list("--widths", g["widths"], 1, 65536, 1, 8, integer=True))
    o.shortcut = _keyword("--shortcut", g["shortcut"], ["A", "B"])
    o.stem_kernel = _number("--stem-kernel", g["stem-kernel"], 1, 15, True)
    o.stem_stride = _number("--stem-stride", g["stem-stride"], 1, 8, True)
    o.fc_bn = not g["no-fc-bn"]
    o.init = g["init"]
    o.batch = _number("--batch", g["batch"], 2, 65536, True)
    o.epochs = _number("--epochs", g["epochs"], 1, 1000000, True)
    o.lr = _number("--lr", g["lr"], 1e-12, 1e12, False)
    o.momentum = _number("--momentum", g["momentum"], 0, 0.999999, False)
    o.wd = _number("--wd", g["wd"], 0, 1, False)
    o.smoothing = _number("--label-smoothing", g["label-smoothing"], 0, 0.999, False)
    o.policy = _keyword("--lr-policy", g["lr-policy"], ["step", "cosine"])
    o.milestones = parse_milestones(g["schedule"])
    o.gamma = _number("--gamma", g["gamma"], 1e-9, 1, False)
    o.warmup = _number("--warmup", g["warmup"], 0, 1e6, False)
    o.force = g["force"]
    o.seed = _number("--seed", g["seed"], 0, 2**63 - 1, True)
    o.threads = (_number("--threads", g["threads"], 1, 1024, True)
                 if g["threads"] is not None else os.cpu_count() or 1)
    o.loader_threads = _number("--loader-threads", g["loader-threads"], 0, 256, True)
    o.max_steps = (_number("--max-steps", g["max-steps"], 1, 2**63 - 1, True)
                   if g["max-steps"] is not None else 0)
    o.log_every = _number("--log-every", g["log-every"], 0, 1000000000, True)
    o.quiet = g["quiet"]
    o.check_options = g["check-options"]
    if not o.train_db or not o.out_dir:
        warn("-d TRAIN_DB is required" if not o.train_db else "-o OUT_DIR is required")
        usage()
    # mp_schedule_check
    if o.policy == "cosine" and o.warmup >= o.epochs:
        die(2, "--warmup %g: the cosine decay needs a warmup shorter than --epochs %d"
               % (o.warmup, o.epochs))
    # mp_resnet_config_check, the parts the options decide
    if o.stem_kernel % 2 == 0:
        die(2, "--stem-kernel %d: the stem's kernel must be odd" % o.stem_kernel)
    if o.shortcut == "A" and any(b < a for a, b in zip(o.widths, o.widths[1:])):
        die(2, "--widths %s: with shortcut A a width may not be smaller than the one "
               "before it" % ",".join(map(str, o.widths)))
    if o.scale_min < o.crop or o.scale_max < o.scale_min:
        die(2, "--scale-min %d and --scale-max %d: need crop %d <= min <= max" % (
            o.scale_min, o.scale_max, o.crop))
    return o


def parse_milestones(text):
    """mp_schedule_parse_milestones, entry by entry as strtol reads them;
    "none" (or nothing) for no drops."""
    if text == "none":
        return []
    out, pos = [], 0
    while text:
        m = _C_INT.match(text, pos)
        end = m.end() if m else pos
        if (not m or not 1 <= int(m.group().strip()) <= 1000000
                or (end < len(text) and text[end] != ",")):
            die(2, "--schedule: schedule \"%s\": entry %d is not an epoch from 1 to 1000000"
                % (text, len(out) + 1))
        v = int(m.group().strip())
        if len(out) == 16:
            die(2, "--schedule: schedule \"%s\": more than 16 milestones" % text)
        if out and v <= out[-1]:
            die(2, "--schedule: schedule \"%s\": epochs must increase" % text)
        out.append(v)
        if end == len(text):
            break
        pos = end + 1  # an entry follows every comma: "5," is bad at its entry 2
    return out


# ---- the schedule (mp_schedule_lr) -------------------------------------------

def schedule_lr(o, epoch, step, steps_per_epoch):
    """The rate of step `step` (from 0) of epoch `epoch` (from 0)."""
    steps_per_epoch = max(steps_per_epoch, 1)
    done = epoch + (step + 1) / steps_per_epoch   # progress at the end of the step
    if o.warmup > 0 and done <= o.warmup:
        return o.lr * done / o.warmup
    if o.policy == "cosine":
        t = min((done - o.warmup) / (o.epochs - o.warmup), 1.0)
        return o.lr * 0.5 * (1 + math.cos(math.pi * t))
    lr = o.lr
    for m in o.milestones:
        if epoch >= m:
            lr *= o.gamma
    return lr


# ---- the toolkit's generator (mp_util.c, mp_augment.c, mp_loader.c) ----------

M64 = (1 << 64) - 1


class Rng:
    """xoshiro256**, its state from splitmix64 started at the seed."""

    def __init__(self, seed):
        x, s = seed & M64, []
        for _ in range(4):
            x = (x + 0x9e3779b97f4a7c15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
            z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
            s.append(z ^ (z >> 31))
        self.s = s

    def next(self):
        s0, s1, s2, s3 = self.s
        r = ((s1 * 5) & M64)
        r = ((((r << 7) | (r >> 57)) & M64) * 9) & M64
        t = (s1 << 17) & M64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 45) | (s3 >> 19)) & M64
        self.s = [s0, s1, s2, s3]
        return r

    def below(self, n):
        if n <= 1:
            return 0
        limit = M64 - M64 % n
        v = self.next()
        while v >= limit:
            v = self.next()
        return v % n


def augment_rng(seed, epoch, record):
    """mp_augment_rng: the generator of one record in one epoch."""
    a = Rng(seed).next() ^ ((epoch * 0x9e3779b97f4a7c15) & M64)
    b = Rng(a).next() ^ ((record * 0xd1b54a32d192ed03) & M64)
    return Rng(b)


def epoch_order(seed, epoch, n):
    """mp_loader_start_at's Fisher-Yates shuffle of the records."""
    r = augment_rng(seed, epoch, M64)
    order = list(range(n))
    for i in range(n, 1, -1):
        j = r.below(i)
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


def augment_draw(r, width, height, scale_min, scale_max, crop):
    """mp_augment_train's draws: (scaled width, height, x, y, flip)."""
    s = scale_min + r.below(scale_max - scale_min + 1)
    if width <= height:
        w, h = s, int(math.floor(height * s / width + 0.5))
    else:
        w, h = int(math.floor(width * s / height + 0.5)), s
    w, h = max(w, crop), max(h, crop)
    x = r.below(w - crop + 1)
    y = r.below(h - crop + 1)
    flip = r.next() >> 63
    return w, h, x, y, flip


# ---- data ---------------------------------------------------------------------

def build_data(torch, mp_dataset):
    import numpy as np
    from PIL import Image

    def resize(img, w, h):
        if img.shape[1] == w and img.shape[0] == h:
            return img
        return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))

    def to_chw(img, mean):
        x = img.astype(np.float32) - mean
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    class Images(torch.utils.data.Dataset):
        """Indexed by (epoch, record) in training, by record in evaluation."""

        def __init__(self, ds, train, o, mean):
            self.ds, self.train, self.o = ds, train, o
            self.mean = np.array(mean, np.float32)

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, key):
            o = self.o
            if self.train:
                epoch, i = key
                img = self.ds.image(i)
                w, h, x, y, flip = augment_draw(augment_rng(o.seed, epoch, i), img.shape[1],
                                                img.shape[0], o.scale_min, o.scale_max, o.crop)
                img = resize(img, w, h)[y:y + o.crop, x:x + o.crop]
                if flip:
                    img = img[:, ::-1]
            else:
                i = key
                img = resize(self.ds.image(i), o.crop, o.crop)
            return to_chw(img, self.mean), int(self.ds.labels[i]), i

    class EpochBatches:
        """The batches of one epoch: the toolkit's order, drop_last."""

        def __init__(self, n, batch, seed, train):
            self.n, self.batch, self.seed, self.train = n, batch, seed, train
            self.epoch = 0

        def __len__(self):
            return self.n // self.batch if self.train else -(-self.n // self.batch)

        def __iter__(self):
            if self.train:
                order = epoch_order(self.seed, self.epoch, self.n)
                for k in range(len(self)):
                    yield [(self.epoch, i) for i in order[k * self.batch:(k + 1) * self.batch]]
            else:
                for k in range(len(self)):
                    yield list(range(k * self.batch, min((k + 1) * self.batch, self.n)))

    return Images, EpochBatches


def worker_init(_):
    import torch
    torch.set_num_threads(1)


# ---- weights --------------------------------------------------------------------

def save_weights(net, path, o, mean, classes, epochs, steps, class_names, torch, mp_resnet):
    """The metadata of mp_weights_save, in its order, then mp-train's keys."""
    import numpy as np
    meta = {
        "format": "mp-resnet", "format_version": "2", "depth": str(o.depth),
        "widths": ",".join(str(w) for w in o.widths), "stem_kernel": str(o.stem_kernel),
        "stem_stride": str(o.stem_stride), "shortcut": o.shortcut, "classes": str(classes),
        "fc_bn": "1" if o.fc_bn else "0", "bn_eps": "0.001", "bn_momentum": "0.9",
        "input_size": str(o.crop), "mean": "%.17g,%.17g,%.17g" % tuple(mean),
        "created_by": "%s (PyTorch %s)" % (PROG, torch.__version__),
        "train.epoch": str(epochs), "train.step": str(steps),
        "train.options": options_json(o, mean),
    }
    if class_names is not None:
        meta["class_names"] = json.dumps(class_names, separators=(",", ":"),
                                         ensure_ascii=False)
    tensors = {k: v.detach().cpu().numpy().astype(np.float32)
               for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    # write_safetensors adds the header and data CRCs, as the toolkit's
    # writer does (mp-weights(5))
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        mp_resnet.write_safetensors(tmp, tensors, meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        die(1, "%s: %s" % (path, e.strerror or e))


def options_json(o, mean):
    return json.dumps({
        "train_db": o.train_db, "batch": o.batch, "epochs": o.epochs, "lr": o.lr,
        "momentum": o.momentum, "wd": o.wd, "label_smoothing": o.smoothing,
        "lr_policy": o.policy, "schedule": ",".join(str(m) for m in o.milestones),
        "gamma": o.gamma, "warmup": o.warmup, "crop": o.crop, "scale_min": o.scale_min,
        "scale_max": o.scale_max, "mean": "%.17g,%.17g,%.17g" % tuple(mean),
        "seed": str(o.seed)}, separators=(",", ":"))


# ---- the run ----------------------------------------------------------------------

class Sums:
    def __init__(self):
        self.loss = self.images = self.top1 = self.top5 = self.seconds = 0.0


def score(torch, logits, labels, sums):
    """mp_rank_of: classes before the label, ties to the lower index."""
    z = logits.detach().float()
    mine = z.gather(1, labels[:, None])
    idx = torch.arange(z.shape[1])[None, :]
    rank = ((z > mine) | ((z == mine) & (idx < labels[:, None]))).sum(1)
    sums.top1 += float((rank < 1).sum())
    sums.top5 += float((rank < 5).sum())
    sums.images += labels.shape[0]


def main():
    # A path given in bytes that are not UTF-8 is printed back as it was, in
    # any locale, not a UnicodeEncodeError after the training.
    sys.stdout.reconfigure(errors="surrogateescape")
    o = parse_options(sys.argv[1:])
    if o.check_options:
        sys.exit(0)
    start = time.monotonic()
    try:
        import numpy as np
        import mp_dataset
    except ImportError as e:
        die(1, "cannot import %s (PyTorch 1.13, numpy, PIL and python3-lmdb are needed)"
            % e.name)

    # data, checked before PyTorch is loaded (seconds)
    try:
        train_ds = mp_dataset.Dataset(o.train_db)
        val_ds = mp_dataset.Dataset(o.val_db) if o.val_db else None
    except mp_dataset.DatasetError as e:
        die(2 if e.request else 1, str(e))
    m = train_ds.meta
    if not m["labelled"]:
        die(2, "%s: training needs labels, and this dataset has none" % o.train_db)
    if o.mean is None:
        if m["mean"] is None:
            die(1, "%s: the dataset has no mean; give --mean R,G,B" % o.train_db)
        o.mean = [float(v) for v in m["mean"]]
    classes = o.classes
    if not classes:
        if m["classes"] < 1:
            die(1, "%s: the dataset does not say how many classes it has (pack it with a "
                   "categories file, or give --classes N)" % o.train_db)
        classes = m["classes"]
    elif m["classes"] > 0 and m["classes"] != classes:
        die(1, "%s: the dataset has %d classes, --classes says %d" % (
            o.train_db, m["classes"], classes))
    if classes < 2:
        die(2, "%s: %d class: the network needs 2 or more" % (o.train_db, classes))
    for ds in [train_ds] + ([val_ds] if val_ds else []):
        bad = np.nonzero((ds.labels < 0) | (ds.labels >= classes))[0]
        if len(bad):
            i = int(bad[0])
            die(1, "%s: record %d has label %d, outside 0..%d" % (
                ds.path, i, ds.labels[i], classes - 1))
    if val_ds:
        if not val_ds.meta["labelled"]:
            die(2, "%s: the validation set has no labels" % o.val_db)
        if val_ds.meta["classes"] > 0 and val_ds.meta["classes"] != classes:
            die(2, "%s: the validation set has %d classes, the training set %d" % (
                o.val_db, val_ds.meta["classes"], classes))
    steps_per_epoch = len(train_ds) // o.batch
    if steps_per_epoch == 0:
        die(2, "%s: %d records make no batch of %d" % (o.train_db, len(train_ds), o.batch))

    try:
        import torch
        import torch.nn.functional as F
        import mp_resnet
    except ImportError as e:
        die(1, "cannot import %s (PyTorch 1.13, numpy, PIL and python3-lmdb are needed)"
            % e.name)
    torch.set_num_threads(o.threads)

    Images, EpochBatches = build_data(torch, mp_dataset)
    train_batches = EpochBatches(len(train_ds), o.batch, o.seed, True)

    def loader(ds, batches):
        kw = {}
        if o.loader_threads > 0:
            kw = dict(num_workers=o.loader_threads, persistent_workers=True,
                      worker_init_fn=worker_init, prefetch_factor=2)
        return torch.utils.data.DataLoader(ds, batch_sampler=batches, **kw)

    train_loader = loader(Images(train_ds, True, o, o.mean), train_batches)
    val_loader = (loader(Images(val_ds, False, o, o.mean),
                         EpochBatches(len(val_ds), o.batch, o.seed, False)) if val_ds else None)

    # the network
    torch.manual_seed(o.seed)
    net = mp_resnet.ResNet(depth=o.depth, widths=o.widths, stem_kernel=o.stem_kernel,
                           stem_stride=o.stem_stride, shortcut=o.shortcut, classes=classes,
                           fc_bn=o.fc_bn, bn_eps=1e-3, bn_momentum=0.9)
    if o.init:
        try:
            tensors, imeta = mp_resnet.read_safetensors(o.init)
            mp_resnet.load_state(net, tensors)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            die(1, "%s: cannot start from it: %s" % (o.init, e))
    else:
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.dim() >= 2:   # conv OIHW, linear [out, in]
                    p.normal_(0.0, math.sqrt(2.0 / (p.numel() / p.shape[0])))
    params = list(net.parameters())
    velocity = [torch.zeros_like(p) for p in params]

    # the output directory
    try:
        os.makedirs(o.out_dir, exist_ok=True)
    except OSError as e:
        die(1, "%s: cannot create the directory: %s" % (o.out_dir, e.strerror or e))
    log_path = os.path.join(o.out_dir, "train.log")
    weights_path = os.path.join(o.out_dir, "weights.safetensors")
    for f in (log_path, weights_path):
        if os.path.lexists(f) and not o.force:
            die(2, "%s already holds a run (%s): start over with --force" % (
                o.out_dir, os.path.basename(f)))
    if o.force and os.path.lexists(weights_path):
        os.unlink(weights_path)
    try:
        log = open(log_path, "w")
        log.write(LOG_HEADER)
        log.flush()
    except OSError as e:
        die(1, "%s: %s" % (log_path, e.strerror or e))

    if not o.quiet:
        nweights = sum(p.numel() for p in params)
        print("%s: PyTorch %s, %d threads, %d loader processes; network depth %d, %d stages, "
              "%d weights, %d px" % (PROG, torch.__version__, o.threads, o.loader_threads,
                                     o.depth, len(o.widths), nweights, o.crop))
        print("%s: %s: %d images, %d batches of %d per epoch; %s" % (
            PROG, o.train_db, len(train_ds), steps_per_epoch, o.batch,
            "validation on " + o.val_db if o.val_db else "no validation"))
        sys.stdout.flush()

    state = {"step": 0, "lr": 0.0}

    def elapsed():
        return time.monotonic() - start

    def log_row(kind, epoch, s, val):
        if val is not None and val.images > 0:
            v = ("%.5f" % (val.loss / val.images), "%.5f" % (1 - val.top1 / val.images),
                 "%.5f" % (1 - val.top5 / val.images))
        else:
            v = ("-", "-", "-")
        n = s.images if s.images > 0 else 1
        try:
            log.write("%s\t%.*f\t%d\t%.6g\t%.5f\t%.5f\t%.5f\t%s\t%s\t%s\t%.1f\t%.1f\n" % (
                kind, 0 if kind == "epoch" else 3, epoch, state["step"], state["lr"],
                s.loss / n, 1 - s.top1 / n, 1 - s.top5 / n, v[0], v[1], v[2],
                s.images / s.seconds if s.seconds > 0 else 0, elapsed()))
            log.flush()
        except OSError as e:
            die(1, "%s: %s" % (log_path, e.strerror or e))

    def validate():
        net.eval()
        s = Sums()
        t0 = time.monotonic()
        with torch.no_grad():
            for x, y, _ in val_loader:
                logits = net(x)
                s.loss += float(F.cross_entropy(logits, y, reduction="sum"))
                score(torch, logits, y, s)
        s.seconds = time.monotonic() - t0
        net.train()
        return s

    val_top = None
    stop = False
    epochs_done = 0
    net.train()
    try:
        for epoch in range(o.epochs):
            train_batches.epoch = epoch
            esum, isum = Sums(), Sums()
            batch = 0
            tick = time.monotonic()
            for x, y, ids in train_loader:
                lr = schedule_lr(o, epoch, batch, steps_per_epoch)
                state["lr"] = lr
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=o.smoothing)
                lv = float(loss)
                if not math.isfinite(lv):
                    die(1, "step %d (epoch %d, batch %d): the loss is %s at lr %g; stopping" % (
                        state["step"] + 1, epoch + 1, batch + 1,
                        "NaN" if math.isnan(lv) else "infinite", lr))
                for p in params:
                    p.grad = None
                loss.backward()
                with torch.no_grad():
                    # neon's form: v = m v - lr (g + wd w); w += v
                    for p, v in zip(params, velocity):
                        v.mul_(o.momentum).add_(p.grad.add(p, alpha=o.wd), alpha=-lr)
                        p.add_(v)
                batch += 1
                state["step"] += 1
                now = time.monotonic()
                dt, tick = now - tick, now
                for s in (esum, isum):
                    s.loss += lv * x.shape[0]
                    score(torch, logits, y, s)
                    s.seconds += dt
                if o.log_every > 0 and state["step"] % o.log_every == 0:
                    log_row("step", epoch + batch / steps_per_epoch, isum, None)
                    isum = Sums()
                if o.max_steps and state["step"] >= o.max_steps:
                    stop = True
                    break
            finished = batch == steps_per_epoch
            val = None
            if val_loader is not None:
                val = validate()
                val_top = (1 - val.top1 / val.images, 1 - val.top5 / val.images)
            log_row("epoch" if finished else "end",
                    epoch + (1.0 if finished else batch / steps_per_epoch), esum, val)
            if finished:
                epochs_done = epoch + 1
            if not o.quiet:
                n = esum.images if esum.images > 0 else 1
                line = ("epoch %d/%d: lr %.4g, loss %.4f, train error %.2f%% top-1, %.2f%% top-5"
                        % (epoch + 1, o.epochs, state["lr"], esum.loss / n,
                           100 * (1 - esum.top1 / n), 100 * (1 - esum.top5 / n)))
                if val is not None and val.images > 0:
                    line += "; val loss %.4f, error %.2f%% top-1, %.2f%% top-5" % (
                        val.loss / val.images, 100 * val_top[0], 100 * val_top[1])
                line += "; %.0f images/s, %.0f s" % (
                    esum.images / esum.seconds if esum.seconds > 0 else 0, elapsed())
                print(line)
                sys.stdout.flush()
            if stop:
                break
    except mp_dataset.DatasetError as e:
        # from a worker, PyTorch wraps the message in a traceback: its last line
        msg = str(e).strip().splitlines()[-1]
        die(1, msg.split("DatasetError: ", 1)[-1])
    except KeyboardInterrupt:
        die(130, "interrupted; no weights written")

    save_weights(net, weights_path, o, o.mean, classes, epochs_done, state["step"],
                 train_ds.meta["class_names"], torch, mp_resnet)
    try:
        log.close()
    except OSError as e:
        die(1, "%s: %s" % (log_path, e.strerror or e))
    if not o.quiet:
        if val_top is not None:
            print("final validation error: %.2f%% top-1, %.2f%% top-5" % (
                100 * val_top[0], 100 * val_top[1]))
        print("weights: %s (%d steps, %.0f s)" % (weights_path, state["step"], elapsed()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
