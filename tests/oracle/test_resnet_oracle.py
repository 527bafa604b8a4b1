#!/usr/bin/python3
"""The CPU backend against PyTorch on the same tiny network, weights and
inputs: logits, loss, probabilities, every gradient, the BN running
statistics and the weights after two SGD steps (neon's update form), for
shortcut types A and B. Prints TAP; every comparison is a test line."""
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
ORACLE = os.path.join(ROOT, "build", "tests", "oracle", "resnet_oracle")

results = []
worst = {}


def rel_err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    scale = max(np.abs(ref).max(initial=0.0), 1e-12)
    return float(np.abs(ours - ref).max(initial=0.0) / scale)


def compare(label, ours, ref, kind):
    err = rel_err(ours, ref)
    results.append((err <= TOL, f"{label}: max rel error {err:.3g}"))
    worst[kind] = max(worst.get(kind, 0.0), err)


def run(shortcut):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "oracle.safetensors")
        subprocess.run([ORACLE, shortcut, out], check=True)
        t, _ = mp_resnet.read_safetensors(out)

    torch.manual_seed(0)
    net = mp_resnet.ResNet(depth=1, widths=(4, 8, 8, 12), shortcut=shortcut,
                           classes=10, bn_eps=1e-3, bn_momentum=0.9).double()
    mp_resnet.load_state(net, {k: v.astype(np.float64) for k, v in t.items()}, "init.")
    net.train()
    params = dict(net.named_parameters())
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    lr, momentum, wd, smoothing = 0.1, 0.9, 5e-4, 0.1
    for step in range(2):
        x = torch.from_numpy(t[f"input.{step}"].astype(np.float64))
        y = torch.from_numpy(t[f"labels.{step}"].astype(np.int64))
        for p in params.values():
            p.grad = None
        logits = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        loss.backward()
        if step == 0:
            compare(f"{shortcut} logits", t["logits"], logits.detach().numpy(), "logits")
            compare(f"{shortcut} loss", t["loss"], [loss.item()], "loss")
            compare(f"{shortcut} probs", t["probs"],
                    torch.softmax(logits, 1).detach().numpy(), "probs")
            for k, p in params.items():
                compare(f"{shortcut} grad {k}", t["grad." + k], p.grad.numpy(), "gradients")
        with torch.no_grad():
            for k, p in params.items():
                velocity[k] = momentum * velocity[k] - lr * (p.grad + wd * p)
                p += velocity[k]
        state = net.state_dict()
        for k, v in state.items():
            if k.endswith("num_batches_tracked"):
                continue
            kind = "running stats" if "running" in k else "weights after SGD"
            compare(f"{shortcut} step {step + 1} {k}", t[f"step{step + 1}." + k],
                    v.numpy(), kind)


def main():
    if not os.access(ORACLE, os.X_OK):
        print("1..1")
        print(f"not ok 1 - {ORACLE} is not built")
        return 1
    for shortcut in ("A", "B"):
        run(shortcut)
    print(f"1..{len(results)}")
    failed = 0
    for i, (ok, msg) in enumerate(results, 1):
        print(f"{'ok' if ok else 'not ok'} {i} - {msg}")
        failed += not ok
    for kind, err in sorted(worst.items()):
        print(f"# largest relative error, {kind}: {err:.3g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
