#!/usr/bin/python3
"""Both CPU backends (the reference loops, cpu-ref, and the fast one, cpu)
against PyTorch on the same small networks, weights and inputs: each SGD
step's logits, loss, probabilities and every gradient, the weights and BN
running statistics after each step (neon's update form, weight decay on
every learned tensor, BN's included), then the inference logits at several
input sizes and their softmax outputs averaged as a multiscale evaluation
averages them, and the weights file written at the end loaded into
PyTorch as it is. The networks cover both shortcuts, depths 1 to 3, one
to four stages, widths that are not multiples of 4, 8 or 16, the stem's
kernel and stride, 2 to 1000 classes with and without the BN after the
fully connected layer, odd batches, and odd feature maps at every stride.
Prints TAP; every comparison is a test line."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("MP_ROOT", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mp_resnet  # noqa: E402

TOL = 1e-4
# the build make test runs (MP_BIN names its programs), else this checkout's
BUILD = os.path.dirname(os.environ.get("MP_BIN", os.path.join(ROOT, "build", "bin")).rstrip("/"))
ORACLE = os.path.join(BUILD, "tests", "oracle", "resnet_oracle")
BACKENDS = ("cpu-ref", "cpu")

# name: resnet_oracle's keys (its defaults: depth 1, widths 4,8,8,12,
# shortcut A, 3x3 stride-2 stem, 10 classes, fc_bn, batch 4 of 32 px, two
# steps, evaluation batch 2).
CASES = {
    # the tiny network of both shortcuts; 113 px: 57, 29, 15, 8; 5 px:
    # 3, 2, 1, 1
    "A": dict(shortcut="A", eval="32,113,5"),
    "B": dict(shortcut="B", classes=1000, eval="32,24"),
    # 25 px through a 5x5 stride-1 stem: 25, 13, 7 (Winograd's partial
    # tiles), identity blocks, no fc_bn, batch 3, three steps, batch 1
    # evaluated at odd sizes
    "odd": dict(shortcut="B", depth=2, widths="5,7,13", stem_kernel=5, stem_stride=1,
                classes=3, fc_bn=0, n=3, size=25, steps=3, eval="25,19,40,97", eval_n=1),
    # the recipe's shape, narrow: 7x7 stem, 97 px (49, 25, 13, 7), 101
    # classes, and the multiscale evaluation's four sizes
    "recipe": dict(shortcut="A", widths="6,10,17,33", stem_kernel=7, classes=101, n=3,
                   size=97, eval="112,128,160,240"),
    # widths at and past a 16-float vector, a stride-3 stem, depth 3, two
    # classes, batch 5
    "wide": dict(shortcut="B", depth=3, widths="16,33", stem_stride=3, classes=2, n=5,
                 size=38, eval="38,23", eval_n=3),
    # one stage, a 1x1 stride-4 stem (pixels it skips), the minimal batch
    "stem1": dict(widths="8", stem_kernel=1, stem_stride=4, classes=4, n=2, size=30,
                  eval="30,31,8"),
}
DEFAULTS = dict(depth=1, widths="4,8,8,12", shortcut="A", stem_kernel=3, stem_stride=2,
                classes=10, fc_bn=1, n=4, size=32, steps=2, eval="", eval_n=2)

results = []
worst = {}
notes = []

# A ReLU input this close to 0, next to the largest input of its call,
# may land on either side in float, where the reference computes in
# double: the backend's gradient is then that of one side and the
# reference's may be the other's, and in these small batches one element
# moves a gradient by percents (an AVX2 machine's rounding put one at
# 2.8e-7 on the other side than an AVX-512 machine's did). Such elements
# are tried both ways, and the reference is the choice closest to the
# backend's gradients; more than MAX_KINKS of them in a step, the step is
# compared as computed.
KINK = 2e-6
MAX_KINKS = 4


class ReluSides:
    """F.relu for mp_resnet's network: records each call's input, and
    gives the elements in force (call, flat index) -> passes or not."""

    def __init__(self):
        self.calls = []
        self.force = {}

    def __call__(self, x, inplace=False):
        call = len(self.calls)
        self.calls.append(x.detach())
        mask = (x > 0).to(x.dtype)
        for (c, j), on in self.force.items():
            if c == call:
                mask.view(-1)[j] = 1.0 if on else 0.0
        return x * mask


def backward_with(net, sides, x, y, smoothing):
    """One forward and backward pass with sides as the ReLU."""
    relu = mp_resnet.F.relu
    mp_resnet.F.relu = sides
    try:
        for p in net.parameters():
            p.grad = None
        logits = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        loss.backward()
    finally:
        mp_resnet.F.relu = relu
    return logits, loss


def reference_step(net, x, y, smoothing, ours, at):
    """The logits and loss of the step, with the gradients in the
    parameters' .grad: those of the ReLU sides nearest the backend's
    gradients ours (name -> array) where inputs lie at a kink."""
    # each pass in training mode moves the running statistics: every
    # pass after the first starts from where they were, so that the
    # chosen one moves them once
    before = {k: v.clone() for k, v in net.named_buffers()}

    def again(force):
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(before[k])
        sides = ReluSides()
        sides.force = force
        backward_with(net, sides, x, y, smoothing)

    sides = ReluSides()
    logits, loss = backward_with(net, sides, x, y, smoothing)
    near = []
    for c, v in enumerate(sides.calls):
        a = v.abs().reshape(-1)
        for j in torch.nonzero(a <= KINK * a.max()).reshape(-1).tolist():
            near.append((c, j, bool(v.reshape(-1)[j] > 0)))
    if not near or len(near) > MAX_KINKS:
        if near:
            notes.append(f"{at}: {len(near)} ReLU inputs at a kink, compared as computed")
        return logits, loss

    def distance():
        return max(rel_err(ours[k], p.grad.numpy()) for k, p in net.named_parameters())

    best, best_err = 0, distance()
    def sides_of(flips):
        return {(c, j): side != bool(flips >> i & 1) for i, (c, j, side) in enumerate(near)}

    for flips in range(1, 2 ** len(near)):
        again(sides_of(flips))
        err = distance()
        if err < best_err:
            best, best_err = flips, err
    again(sides_of(best))
    if best:
        notes.append(f"{at}: {bin(best).count('1')} of {len(near)} ReLU input(s) at a kink "
                     "taken on the other side")
    return logits, loss


def rel_err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    scale = max(np.abs(ref).max(initial=0.0), 1e-12)
    return float(np.abs(ours - ref).max(initial=0.0) / scale)


def compare(label, pairs, kind):
    """One test line for a group of (name, ours, reference) tensors: the
    largest error and the tensor it is in. label starts "CASE BACKEND"."""
    err, where = -1.0, ""
    for name, ours, ref in pairs:
        e = rel_err(ours, ref)
        if e > err:
            err, where = e, name
    what = f" ({where})" if len(pairs) > 1 else ""
    results.append((err <= TOL, f"{label}: max rel error {err:.3g}{what}"))
    key = (label.split()[1], kind)
    worst[key] = max(worst.get(key, 0.0), err)


def torch_net(spec):
    return mp_resnet.ResNet(depth=spec["depth"],
                            widths=tuple(int(w) for w in spec["widths"].split(",")),
                            stem_kernel=spec["stem_kernel"], stem_stride=spec["stem_stride"],
                            shortcut=spec["shortcut"], classes=spec["classes"],
                            fc_bn=bool(spec["fc_bn"]), bn_eps=1e-3, bn_momentum=0.9).double()


def sizes(spec):
    return [int(s) for s in spec["eval"].split(",")] if spec["eval"] else []


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def f64(t, prefix):
    return {k[len(prefix):]: v.astype(np.float64) for k, v in t.items() if k.startswith(prefix)}


def check_backend(case, spec, backend, t, total, weights):
    """Each step in PyTorch (double) from the state the backend had before
    it: its weights, running statistics and momenta; the inference after
    spec["steps"] steps from the weights and running statistics then."""
    tag = f"{case} {backend}"
    lr, momentum, wd, smoothing = 0.1, 0.9, 5e-4, 0.1
    net = torch_net(spec)
    params = dict(net.named_parameters())
    for step in range(total):
        before = "init." if step == 0 else f"step{step}."
        mp_resnet.load_state(net, f64(t, before))
        velocity = ({k: torch.zeros_like(p) for k, p in params.items()} if step == 0 else
                    {k: torch.from_numpy(v) for k, v in f64(t, f"momentum{step}.").items()})
        net.train()
        x = torch.from_numpy(t[f"input.{step}"].astype(np.float64))
        y = torch.from_numpy(t[f"labels.{step}"].astype(np.int64))
        at = f"{tag} step {step + 1}" + (" after inference" if step == spec["steps"] else "")
        ours = {k: t[f"grad{step + 1}.{k}"] for k in params}
        logits, loss = reference_step(net, x, y, smoothing, ours, at)
        if step == 0:
            compare(f"{at} logits", [("", t["logits.0"], logits.detach().numpy())], "logits")
        compare(f"{at} loss", [("", t[f"loss.{step}"], [loss.item()])], "loss")
        compare(f"{at} probs", [("", t[f"probs.{step}"],
                                 torch.softmax(logits, 1).detach().numpy())], "probs")
        compare(f"{at} gradients",
                [(k, t[f"grad{step + 1}.{k}"], p.grad.numpy()) for k, p in params.items()],
                "gradients")
        with torch.no_grad():
            for k, p in params.items():
                velocity[k] = momentum * velocity[k] - lr * (p.grad + wd * p)
                p += velocity[k]
        state = {k: v.numpy() for k, v in net.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        after = f"step{step + 1}."
        compare(f"{at} running stats",
                [(k, t[after + k], v) for k, v in state.items() if "running" in k],
                "running stats")
        compare(f"{at} weights after SGD",
                [(k, t[after + k], v) for k, v in state.items() if "running" not in k],
                "weights after SGD")
        compare(f"{at} momenta",
                [(k, t[f"momentum{step + 1}.{k}"], v.numpy()) for k, v in velocity.items()],
                "weights after SGD")
    # inference with the weights and running statistics it ran with
    mp_resnet.load_state(net, f64(t, f"step{spec['steps']}."))
    net.eval()
    views = sizes(spec)
    ref = {}
    with torch.no_grad():
        for size in views:
            ref[size] = net(torch.from_numpy(t[f"eval_input.{size}"].astype(np.float64))).numpy()
            compare(f"{tag} inference logits at {size} px",
                    [("", t[f"eval_logits.{size}"], ref[size])], "inference logits")
            again = t[f"eval_again.{size}"]
            compare(f"{tag} inference at {size} px again, {len(again)} image(s), after the "
                    "other sizes", [("", again, ref[size][:len(again)])], "inference logits")
    if len(views) > 1:
        ours = np.mean([softmax(t[f"eval_logits.{s}"]) for s in views], axis=0)
        theirs = np.mean([softmax(ref[s]) for s in views], axis=0)
        compare(f"{tag} softmax averaged over {','.join(map(str, views))} px",
                [("", ours, theirs)], "multiscale probs")
    # the weights file, loaded into PyTorch as it is: the last step's
    # tensors to the bit, and PyTorch's logits in float from them
    last = total
    fnet, _ = mp_resnet.load(weights)
    fstate = {k: v.numpy() for k, v in fnet.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    same = all(np.array_equal(v, t[f"step{last}.{k}"]) for k, v in fstate.items())
    results.append((same and len(fstate) == sum(1 for k in t if k.startswith("init.")),
                    f"{tag} weights file loads into PyTorch: {len(fstate)} tensors, "
                    f"{'the same bits' if same else 'DIFFERENT values'}"))
    with torch.no_grad():
        net.eval()
        mp_resnet.load_state(net, f64(t, f"step{last}."))
        x = t["input.0"]
        z = fnet(torch.from_numpy(x)).double().numpy()
        ref = net(torch.from_numpy(x.astype(np.float64))).numpy()
    compare(f"{tag} PyTorch in float on the weights file", [("", z, ref)], "inference logits")


def run(case, keys):
    spec = dict(DEFAULTS, **keys)
    args = [f"{k}={v}" for k, v in keys.items()]
    outs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in BACKENDS:
            out = os.path.join(tmp, f"{backend}.safetensors")
            weights = os.path.join(tmp, f"{backend}.weights.safetensors")
            p = subprocess.run([ORACLE, out, weights, f"backend={backend}"] + args)
            if p.returncode != 0:
                results.append((False, f"{case} {backend}: resnet_oracle exit {p.returncode}"))
                continue
            t, meta = mp_resnet.read_safetensors(out)
            outs[backend] = (t, int(meta["steps"]), weights)
        if not outs:
            return
        # both backends start from the same weights and inputs
        first = next(iter(outs.values()))[0]
        for backend, (t, total, weights) in outs.items():
            shared = [k for k in first if k.startswith(("init.", "input.", "labels.",
                                                        "eval_input."))]
            if not all(np.array_equal(t[k], first[k]) for k in shared):
                results.append((False, f"{case} {backend}: other initial weights or inputs"))
                continue
            check_backend(case, spec, backend, t, total, weights)


def main():
    if not os.access(ORACLE, os.X_OK):
        print("1..1")
        print(f"not ok 1 - {ORACLE} is not built")
        return 1
    torch.set_num_threads(1)
    for case, keys in CASES.items():
        run(case, keys)
    print(f"1..{len(results)}")
    failed = 0
    for i, (ok, msg) in enumerate(results, 1):
        print(f"{'ok' if ok else 'not ok'} {i} - {msg}")
        failed += not ok
    for (backend, kind), err in sorted(worst.items()):
        print(f"# largest relative error, {backend}, {kind}: {err:.3g}")
    for note in notes:
        print(f"# {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
