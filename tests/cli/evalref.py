#!/usr/bin/python3
"""mp-eval's numbers computed again, from mp-eval(1)'s description, with
PIL for decoding, numpy for the resampling and PyTorch for the network.

    evalref.py OUTDIR -m WEIGHTS (--list LIST [-r ROOT] | --db DB)
               [--scales a,b,..] [--crops full|center|5|10] [--flip]
               [--combine prob|logit] [--topk K] [--dump N]

writes OUTDIR/probs.tsv, submission.txt, per-class.tsv, confusion.tsv (the
last two with labels) and errors.json ({"scales": [[size, top1, topk], ...],
"combined": [top1, topk]}), in mp-eval's formats; --dump N writes the views
of the first N images as OUTDIR/views/NNNNNN-sS-vV.png. The resampling is
computed in float32, as mp-eval computes it (--double: in double, which
differs by one where a value is within about 1e-5 of a half).

    evalref.py runs < LINES
does the same for each line of standard input (OUTDIR and options, as
words of a shell), in one process.

    evalref.py compare REFDIR PROBS
prints the largest difference of the probabilities of two --probs files
(names and labels must agree).

    evalref.py check REFDIR DIR...
compares the outputs of mp-eval in each DIR (probs.tsv, result.json from
--json, and those of submission.txt, per-class.tsv and confusion.tsv that
are there) with the reference's: the errors and the files exactly, and
prints the largest difference of the probabilities; exits 1 naming the
first output that differs otherwise.
"""
import argparse
import json
import os
import shlex
import sys

import numpy as np


def cubic(x):
    """Catmull-Rom, a = -0.5."""
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def axis_weights(n_in, n_out):
    """n_out x n_in: output i centred on (i + 0.5) n_in / n_out, the kernel
    widened by the shrink factor, normalised over the pixels that exist."""
    scale = n_in / n_out
    f = max(scale, 1.0)
    k = np.arange(n_in) + 0.5
    w = cubic((k[None, :] - (np.arange(n_out)[:, None] + 0.5) * scale) / f)
    # summed in source order, as a reader of the formula would
    return w / np.cumsum(w, 1)[:, -1:]


def taps(w):
    """A weight matrix as (first source pixel, float32 weights) per output,
    for sums in source order."""
    nz = [np.nonzero(r)[0] for r in w]
    lo = np.array([t[0] for t in nz])
    n = max(t[-1] - t[0] + 1 for t in nz)
    tw = np.zeros((len(w), n), np.float32)
    for i, t in enumerate(nz):
        tw[i, :t[-1] - t[0] + 1] = w[i, t[0]:t[-1] + 1]
    return lo, tw


def pass32(x, w, axis):
    """Resamples float32 x along axis (0 or 1) as float32 sums over the taps
    in source order, each product and sum rounded to float32."""
    lo, tw = taps(w)
    x = np.moveaxis(x, axis, 0)
    acc = np.zeros((len(lo),) + x.shape[1:], np.float32)
    for k in range(tw.shape[1]):
        idx = np.minimum(lo + k, x.shape[0] - 1)
        acc += tw[:, k].reshape((-1,) + (1,) * (x.ndim - 1)) * x[idx]
    return np.moveaxis(acc, 0, axis)


def resize(img, w, h, single=True):
    """H x W x 3 uint8 to h x w x 3 uint8: rows first into floating point,
    then columns, rounded and clamped; an axis that shrinks by more than 60
    times first goes to 30 times its final size. single: in float32 as the
    toolkit computes (weights rounded to float, each product and sum too);
    otherwise in double, which differs by one where a value is within about
    1e-5 of a half."""
    H, W = img.shape[:2]
    if W > 60 * w or H > 60 * h:
        img = resize(img, 30 * w if W > 60 * w else W, 30 * h if H > 60 * h else H, single)
        H, W = img.shape[:2]
    if single:
        rows = pass32(img.astype(np.float32), axis_weights(W, w), 1)
        out = pass32(rows, axis_weights(H, h), 0)
    else:
        rows = np.einsum("xk,hkc->hxc", axis_weights(W, w), img.astype(np.float64))
        out = np.einsum("yk,kxc->yxc", axis_weights(H, h), rows)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def views(s, c, crops, flip):
    """(x, y, size, flip) of each view of scale s, numbered as in mp-eval(1)."""
    if crops == "full":
        v = [(0, 0, s)]
    else:
        m = (s - c) // 2
        v = [(m, m, c)] if crops == "center" else [
            (0, 0, c), (s - c, 0, c), (0, s - c, c), (s - c, s - c, c), (m, m, c)]
        if crops == "10":
            flip = True
    out = [t + (0,) for t in v]
    return out + [t + (1,) for t in v] if flip else out


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ranking(p):
    """Classes best first; equal probabilities by class index."""
    return np.argsort(-p, kind="stable")


def tsv_field(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


_cache = {}


def cached(key, make):
    """One process may compute several runs: images, nets and resized
    images are made once."""
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def load_images(a):
    """[(name, label or -1, H x W x 3 uint8)] and whether there are labels."""
    sys.path.insert(0, a.scripts)
    import mp_dataset
    if a.db:
        ds = mp_dataset.Dataset(a.db)
        labelled = ds.meta["labelled"]
        return [(ds.names[i], int(ds.labels[i]) if labelled else -1, ds.image(i))
                for i in range(len(ds))], labelled
    from PIL import Image
    out, labelled = [], True
    for line in open(a.list):
        f = line.split()
        if not f:
            continue
        path = f[0] if os.path.isabs(f[0]) or not a.root else os.path.join(a.root, f[0])
        out.append((f[0], int(f[1]) if len(f) > 1 else -1,
                    mp_dataset.to_rgb(Image.open(path))))
        labelled = labelled and len(f) > 1
    return out, labelled


def load_net(a):
    sys.path.insert(0, a.scripts)
    import mp_resnet
    return mp_resnet.load(a.m)


def evaluate(a):
    import torch
    torch.set_num_threads(1)
    net, meta = cached(("net", a.m), lambda: load_net(a))
    c, C = int(meta["input_size"]), int(meta["classes"])
    mean = np.array([float(v) for v in meta["mean"].split(",")])
    src = ("images", a.db, a.list, a.root)
    images, labelled = cached(src, lambda: load_images(a))
    scales = [int(s) for s in a.scales.split(",")] if a.scales else [c]
    k = min(a.topk, C)
    S, N = len(scales), len(images)
    if a.dump:
        os.makedirs(os.path.join(a.out, "views"), exist_ok=True)
    p_scale = np.zeros((S, N, C))
    z_all = np.zeros((N, C))
    for si, s in enumerate(scales):
        vs = views(s, c, a.crops, a.flip)
        full = [cached(src + (i, s, a.double), lambda: img if img.shape[:2] == (s, s)
                       else resize(img, s, s, not a.double))
                for i, (_, _, img) in enumerate(images)]
        z = np.zeros((len(vs), N, C))
        for vi, (x0, y0, size, fl) in enumerate(vs):
            x = []
            for i in range(N):
                v = full[i][y0:y0 + size, x0:x0 + size]
                if fl:
                    v = v[:, ::-1]
                if i < a.dump:
                    from PIL import Image
                    Image.fromarray(np.ascontiguousarray(v)).save(
                        os.path.join(a.out, "views", "%06d-s%d-v%d.png" % (i, s, vi)))
                x.append((v.astype(np.float64) - mean).transpose(2, 0, 1))
            with torch.no_grad():
                z[vi] = net(torch.tensor(np.stack(x), dtype=torch.float32)).double().numpy()
        # the formulas of mp-eval(1), Combination
        if a.combine == "prob":
            p_scale[si] = softmax(z).mean(0)
            z_all += p_scale[si] / S
        else:
            p_scale[si] = softmax(z.mean(0))
            z_all += z.sum(0)
    p = z_all if a.combine == "prob" else softmax(z_all / (S * len(vs)))
    y = np.array([t[1] for t in images])
    with open(os.path.join(a.out, "probs.tsv"), "w") as f:
        f.write("name\tlabel" + "".join("\tp%d" % j for j in range(C)) + "\n")
        for i, (name, label, _) in enumerate(images):
            f.write(tsv_field(name) + "\t" + (str(label) if labelled else "-") +
                    "".join("\t%.9g" % v for v in p[i]) + "\n")
    order = [ranking(q) for q in p]
    with open(os.path.join(a.out, "submission.txt"), "w") as f:
        rows = sorted((t[0].encode(), i) for i, t in enumerate(images))
        for name, i in rows:
            f.write(name.decode() + "".join(" %d" % j for j in order[i][:k]) + "\n")
    errors = {}
    if labelled:
        def err(probs, n):
            return np.mean([y[i] not in ranking(probs[i])[:n] for i in range(len(y))])
        errors["scales"] = [[s, err(p_scale[si], 1), err(p_scale[si], k)]
                            for si, s in enumerate(scales)]
        errors["combined"] = [err(p, 1), err(p, k)]
        names = json.loads(meta["class_names"]) if meta.get("class_names") else None
        with open(os.path.join(a.out, "per-class.tsv"), "w") as f:
            f.write("class\tname\timages\ttop1_err\ttop%d_err\n" % k)
            for j in range(C):
                mine = [i for i in range(len(y)) if y[i] == j]
                f.write("%d\t%s\t%d\t" % (j, tsv_field(names[j]) if names else "-", len(mine)))
                if mine:
                    f.write("%.5f\t%.5f\n" % (
                        sum(order[i][0] != j for i in mine) / len(mine),
                        sum(j not in order[i][:k] for i in mine) / len(mine)))
                else:
                    f.write("-\t-\n")
        conf = np.zeros((C, C), np.int64)
        for i in range(len(y)):
            conf[y[i], order[i][0]] += 1
        with open(os.path.join(a.out, "confusion.tsv"), "w") as f:
            f.write("label\\predicted" + "".join("\t%d" % j for j in range(C)) + "\n")
            for j in range(C):
                f.write("%d" % j + "".join("\t%d" % v for v in conf[j]) + "\n")
    with open(os.path.join(a.out, "errors.json"), "w") as f:
        json.dump(errors, f)


def probs_diff(refdir, probs):
    a = [l.rstrip("\n").split("\t") for l in open(os.path.join(refdir, "probs.tsv"))]
    b = [l.rstrip("\n").split("\t") for l in open(probs)]
    if a[0] != b[0] or len(a) != len(b):
        sys.exit("%s: the header or the number of rows differs from the reference's" % probs)
    d = 0.0
    for x, y in zip(a[1:], b[1:]):
        if x[:2] != y[:2]:
            sys.exit("%s: row %s, the reference has %s" % (probs, y[:2], x[:2]))
        d = max([d] + [abs(float(p) - float(q)) for p, q in zip(x[2:], y[2:])])
    return d


def check(refdir, ours):
    """Compares mp-eval's outputs in ours (probs.tsv, result.json and
    whichever of submission.txt, per-class.tsv, confusion.tsv it wrote)
    with the reference's: returns the largest difference of the
    probabilities; exits 1 naming the first output that differs otherwise."""
    d = probs_diff(refdir, os.path.join(ours, "probs.tsv"))
    ref = json.load(open(os.path.join(refdir, "errors.json")))
    got = json.load(open(os.path.join(ours, "result.json")))
    if ref:
        mine = [[s["size"], s["top1_err"], s["topk_err"]] for s in got["scales"]]
        mine.append([got["combined"]["top1_err"], got["combined"]["topk_err"]])
        want = ref["scales"] + [ref["combined"]]
        if mine != want:
            sys.exit("%s: errors %s, the reference's %s" % (ours, mine, want))
    for f in ("submission.txt", "per-class.tsv", "confusion.tsv"):
        if os.path.exists(os.path.join(ours, f)):
            if open(os.path.join(ours, f)).read() != open(os.path.join(refdir, f)).read():
                sys.exit("%s/%s differs from the reference's" % (ours, f))
    return d


def parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("-m", required=True)
    ap.add_argument("--list")
    ap.add_argument("-r", "--root")
    ap.add_argument("--db")
    ap.add_argument("--scales")
    ap.add_argument("--crops", default="full", choices=("full", "center", "5", "10"))
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--combine", default="prob", choices=("prob", "logit"))
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--dump", type=int, default=0)
    ap.add_argument("--double", action="store_true", help="resample in double precision")
    ap.add_argument("--scripts", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "..", "..", "scripts"))
    return ap


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "compare":
        return print("%.3g" % probs_diff(sys.argv[2], sys.argv[3]))
    if len(sys.argv) >= 4 and sys.argv[1] == "check":
        return print("%.3g" % max(check(sys.argv[2], d) for d in sys.argv[3:]))
    if sys.argv[1:] == ["runs"]:
        todo = [shlex.split(l) for l in sys.stdin if l.strip()]
    else:
        todo = [sys.argv[1:]]
    for args in todo:
        a = parser().parse_args(args)
        os.makedirs(a.out, exist_ok=True)
        evaluate(a)


if __name__ == "__main__":
    main()
