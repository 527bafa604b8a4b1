"""The toolkit's residual network in PyTorch, and safetensors without extra
packages: load a weights file that mp-train writes and use it from PyTorch.

    import mp_resnet
    net, meta = mp_resnet.load("weights.safetensors")   # eval mode
    logits = net(images)   # N x 3 x H x W, mean-subtracted, 0..255 scale

The module names follow the file's tensor names (stem.conv.weight,
stages.S.blocks.B.conv1.weight, fc.weight, fc_bn.running_mean, ...).
"""
import json
import re
import struct
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
           "U8": np.uint8}


def read_safetensors(path):
    """Returns ({name: numpy array}, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=_DTYPES[t["dtype"]])
        out[name] = arr.reshape(t["shape"]).copy()
    return out, meta


def data_crc32(tensors):
    """The "crc32" metadata value of tensors, written in this order
    (mp-weights(5)): the CRC-32 of the data section, as 8 hex digits."""
    crc = 0
    for v in tensors.values():
        crc = zlib.crc32(np.asarray(v).tobytes(order="C"), crc)
    return "%08x" % (crc & 0xffffffff)


HEADER_CRC_PREFIX = b'{"__metadata__":{"header_crc32":"'


def write_safetensors(path, tensors, metadata=None, checksums=True):
    """tensors: {name: numpy array} written in the given order.

    As the toolkit's writer does (mp-weights(5)): "__metadata__" first and,
    when there is metadata and checksums, "header_crc32" first in it and
    "crc32" (the data section's CRC) last, both computed here whatever the
    dict holds; the header padded with spaces to put the data at a multiple
    of 8. checksums=False writes the metadata as given, as other writers do.
    """
    names = {np.dtype(v): k for k, v in _DTYPES.items()}
    header, offset, chunks = {}, 0, []
    if metadata and checksums:
        meta = {"header_crc32": "00000000"}
        meta.update((k, v) for k, v in metadata.items()
                    if k not in ("header_crc32", "crc32"))
        meta["crc32"] = data_crc32(tensors)
        header["__metadata__"] = meta
    elif metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        # not ascontiguousarray, which makes a scalar's shape [] into [1]
        arr = np.asarray(arr)
        raw = arr.tobytes(order="C")
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    head = bytearray(struct.pack("<Q", len(text)) + text)
    if metadata and checksums:
        # the CRC of the length and the header with "00000000" in its place
        at = 8 + len(HEADER_CRC_PREFIX)
        assert head[8:at] == HEADER_CRC_PREFIX
        head[at:at + 8] = b"%08x" % (zlib.crc32(bytes(head)) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(bytes(head) + b"".join(chunks))


class ShortcutA(nn.Module):
    """Parameter-free: subsample by the stride, zero-pad extra channels."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x):
        y = x[:, :, ::self.stride, ::self.stride]
        return F.pad(y, (0, 0, 0, 0, 0, self.extra)) if self.extra else y


class Projection(nn.Module):
    def __init__(self, cin, cout, stride, eps, momentum):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    def __init__(self, cin, cout, stride, shortcut, eps, momentum):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        if shortcut == "B" and (stride != 1 or cin != cout):
            self.shortcut = Projection(cin, cout, stride, eps, momentum)
        else:
            self.shortcut = ShortcutA(cin, cout, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class Stem(nn.Module):
    def __init__(self, cout, kernel, stride, eps, momentum):
        super().__init__()
        self.conv = nn.Conv2d(3, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Stage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class ResNet(nn.Module):
    """momentum is the toolkit's (neon's) 0.9; PyTorch's is 1 - that."""

    def __init__(self, depth=9, widths=(32, 64, 128, 256), stem_kernel=3,
                 stem_stride=2, shortcut="A", classes=100, fc_bn=True,
                 bn_eps=1e-3, bn_momentum=0.9):
        super().__init__()
        m = 1.0 - bn_momentum
        self.stem = Stem(widths[0], stem_kernel, stem_stride, bn_eps, m)
        stages, cin = [], widths[0]
        for s, w in enumerate(widths):
            blocks = []
            for b in range(depth):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(Block(cin, w, stride, shortcut, bn_eps, m))
                cin = w
            stages.append(Stage(blocks))
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(cin, classes, bias=False)
        self.fc_bn = nn.BatchNorm1d(classes, eps=bn_eps, momentum=m) if fc_bn else None

    def forward(self, x):
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        x = self.fc(x.mean(dim=(2, 3)))
        return self.fc_bn(x) if self.fc_bn is not None else x


def _whole(meta, key, many=False):
    """A metadata integer as mp-weights(5) writes it, or with many a list
    of them ("4,8"): decimal digits only, no sign, blank or leading zero
    ("+1", " 1" and "01" are refused, as the C reader refuses them)."""
    text = meta[key]
    words = text.split(",") if many else [text]
    if not all(re.fullmatch(r"0|[1-9][0-9]*", w) for w in words):
        raise ValueError(f'metadata "{key}" = "{text}" is not '
                         + ("a list of whole numbers" if many else "a whole number"))
    return tuple(int(w) for w in words) if many else int(text)


def _number(meta, key, default=None):
    """A metadata decimal number, written as the C reader takes it: a sign,
    digits, a fraction and an exponent; no blank, hexadecimal, inf or nan."""
    text = meta.get(key, default) if default is not None else meta[key]
    if not re.fullmatch(r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?", text):
        raise ValueError(f'metadata "{key}" = "{text}" is not a number')
    return float(text)


def from_metadata(meta):
    """Builds the network a weights file's metadata describes."""
    return ResNet(depth=_whole(meta, "depth"),
                  widths=_whole(meta, "widths", many=True),
                  stem_kernel=_whole(meta, "stem_kernel"),
                  stem_stride=_whole(meta, "stem_stride"),
                  shortcut=meta["shortcut"], classes=_whole(meta, "classes"),
                  fc_bn=meta.get("fc_bn", "1") == "1",
                  bn_eps=_number(meta, "bn_eps"),
                  bn_momentum=_number(meta, "bn_momentum", "0.9"))


def load_state(net, tensors, prefix=""):
    """Copies the file's tensors into net; every parameter must be there."""
    wanted = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if prefix + k not in tensors]
    if missing:
        raise ValueError(f"the file lacks {missing}")
    net.load_state_dict({k: torch.from_numpy(tensors[prefix + k]) for k in wanted},
                        strict=False)


def load(path):
    tensors, meta = read_safetensors(path)
    net = from_metadata(meta)
    load_state(net, tensors)
    return net.eval(), meta
