#!/usr/bin/python3
"""loader-rate-torch.py: the PyTorch peer of loader-rate: the training
data of scripts/torch-train.py (its Dataset and batch order: PIL bicubic
resize, the same draws, crop, flip and mean as mp-train's loader) through a
torch.utils.data.DataLoader with THREADS worker processes, without the
network. Takes BATCHES batches of BATCH after one untimed batch; prints
"images_per_second <float>" on stdout and a summary on stderr.

usage: loader-rate-torch.py [-t THREADS] [-b BATCH] [-n BATCHES] [-c CROP] DB
"""
import getopt
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
USAGE = "usage: loader-rate-torch.py [-t THREADS] [-b BATCH] [-n BATCHES] [-c CROP] DB"
HELP = USAGE + """

Time torch-train.py's training data (its Dataset, the recipe's augmentation)
through a PyTorch DataLoader, without the network.

  -t THREADS  DataLoader worker processes (default 2)
  -b BATCH    images per batch (default 128)
  -n BATCHES  timed batches, after one untimed (default 50)
  -c CROP     crop size (default 112)
  -h, --help  this help

Prints "images_per_second <float>" on stdout and a summary on stderr.
"""


def die(code, msg):
    sys.stderr.write("loader-rate-torch.py: %s\n" % msg)
    sys.exit(code)


def main(argv):
    try:
        opts, args = getopt.getopt(argv[1:], "t:b:n:c:h", ["help"])
    except getopt.GetoptError as e:
        die(2, "%s\n%s" % (e, USAGE))
    v = {"-t": 2, "-b": 128, "-n": 50, "-c": 112}
    for k, a in opts:
        if k in ("-h", "--help"):
            sys.stdout.write(HELP)
            return 0
        # ASCII digits: str.isdigit() also takes "²", which int() refuses
        if not (a.isascii() and a.isdigit()) or int(a) < 1:
            die(2, "%s %s: expected a positive number" % (k, a))
        v[k] = int(a)
    if len(args) != 1:
        sys.stderr.write(USAGE + "\n")
        sys.exit(2)
    sys.path.insert(0, HERE)
    spec = importlib.util.spec_from_file_location("torch_train", os.path.join(HERE, "torch-train.py"))
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    try:
        import numpy  # noqa: F401 (mp_dataset's, named here when missing)
        import PIL  # noqa: F401
        import torch
        import mp_dataset
    except ImportError as e:
        die(1, "cannot import %s (Debian: python3-torch python3-numpy python3-pil python3-lmdb)"
            % e.name)
    try:
        ds = mp_dataset.Dataset(args[0])
    except (OSError, mp_dataset.DatasetError) as e:
        die(1, str(e))
    o = tt.Opts()
    o.crop, o.scale_min, o.scale_max, o.seed = v["-c"], 128, 240, 1
    mean = ds.meta.get("mean", [0, 0, 0])
    Images, EpochBatches = tt.build_data(torch, mp_dataset)
    batches = EpochBatches(len(ds), v["-b"], o.seed, True)
    if len(batches) < 1:
        die(1, "%s: fewer than %d images, not one batch" % (args[0], v["-b"]))
    loader = torch.utils.data.DataLoader(
        Images(ds, True, o, mean), batch_sampler=batches, num_workers=v["-t"],
        persistent_workers=True, worker_init_fn=tt.worker_init, prefetch_factor=2)
    done, taken, t0 = 0, 0, None
    while taken <= v["-n"]:
        for x, _, _ in loader:
            if taken == 0:
                t0 = time.monotonic()
            else:
                done += x.shape[0]
            taken += 1
            if taken > v["-n"]:
                break
        batches.epoch += 1
    s = time.monotonic() - t0
    print("images_per_second %.1f" % (done / s))
    sys.stderr.write("loader-rate-torch.py: %d images in %.2f s with %d workers: %.0f images/s\n"
                     % (done, s, v["-t"], done / s))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
