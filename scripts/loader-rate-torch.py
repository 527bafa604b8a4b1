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


def die(code, msg):
    sys.stderr.write("loader-rate-torch.py: %s\n" % msg)
    sys.exit(code)


def main(argv):
    try:
        opts, args = getopt.getopt(argv[1:], "t:b:n:c:")
    except getopt.GetoptError as e:
        die(2, "%s\nusage: loader-rate-torch.py [-t THREADS] [-b BATCH] [-n BATCHES] [-c CROP] DB" % e)
    v = {"-t": 2, "-b": 128, "-n": 50, "-c": 112}
    for k, a in opts:
        # ASCII digits: str.isdigit() also takes "²", which int() refuses
        if not (a.isascii() and a.isdigit()) or int(a) < 1:
            die(2, "%s %s: expected a positive number" % (k, a))
        v[k] = int(a)
    if len(args) != 1:
        die(2, "usage: loader-rate-torch.py [-t THREADS] [-b BATCH] [-n BATCHES] [-c CROP] DB")
    sys.path.insert(0, HERE)
    spec = importlib.util.spec_from_file_location("torch_train", os.path.join(HERE, "torch-train.py"))
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    import torch
    import mp_dataset
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
