#!/usr/bin/env bats
# mp-eval: errors on weights whose answer is known, the combination of
# scales, the views, the submission, the three inputs, thread counts, and
# every kind of bad input, on small generated data and a tiny network.

load helpers

ev() { "$MP_BIN/mp-eval" "$@"; }

# 36 labelled 16x16 PNG images of 6 classes (a DB with them kept as PNG,
# the same as a stream, and the list), 13 unlabelled ones in shuffled
# order, and three networks of 6 classes trained at 16 px: "rand" (random
# weights), "const" (fc_bn gamma 0, so the logits are fc_bn's bias for
# every image) and, for bad inputs, one of 4 classes and files that are no
# mp-resnet weights.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$PY" "$MKIMAGES" classes im 36 16 16 6 >val.txt
	"$PY" "$MKIMAGES" classes te 13 16 16 6 seed=5 | awk '{ print $1 }' >test.txt
	"$MP_BIN/mp-batchwriter" -q --classes 6 --size 16 --encoding keep --macrobatch 10 \
		-o val.db val.txt
	"$MP_BIN/mp-batchwriter" -q --classes 6 --size 16 --encoding keep --macrobatch 10 \
		val.txt >val.stream
	"$MP_BIN/mp-batchwriter" -q --size 16 --shuffle --seed 3 -o test.db test.txt
	awk '$2 < 4' val.txt >val4.txt
	"$MP_BIN/mp-batchwriter" -q --classes 4 --size 16 -o val4.db val4.txt
	"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A 6 7 init.safetensors >/dev/null
	"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A 4 7 four.safetensors >/dev/null
	"$PY" - "$MP_ROOT/scripts" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import mp_resnet
def save(path, t, meta):
    meta["crc32"] = mp_resnet.data_crc32(t)
    mp_resnet.write_safetensors(path, t, meta)
import torch
import mp_dataset
t, meta = mp_resnet.read_safetensors("init.safetensors")
meta["input_size"] = "16"
# random weights, but not degenerate: fc_bn's running statistics are set to
# those of the fc outputs on the validation images, so that the logits of
# different images differ by about 2
net = mp_resnet.from_metadata(meta).eval()
mp_resnet.load_state(net, t)
mean = np.array([float(v) for v in meta["mean"].split(",")])
ds = mp_dataset.Dataset("val.db")
x = np.stack([(ds.image(i) - mean).transpose(2, 0, 1) for i in range(len(ds))])
with torch.no_grad():
    f = net.fc(net.stages[1](net.stages[0](net.stem(torch.tensor(x, dtype=torch.float32)))).mean(dim=(2, 3))).double().numpy()
t["fc_bn.running_mean"] = f.mean(0).astype(np.float32)
t["fc_bn.running_var"] = f.var(0).astype(np.float32)
t["fc_bn.weight"] = np.full(6, 2.0, np.float32)
save("rand.safetensors", t, meta)
t["fc_bn.weight"] = np.zeros(6, np.float32)
t["fc_bn.bias"] = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.7], np.float32)
save("const.safetensors", t, meta)
four, m4 = mp_resnet.read_safetensors("four.safetensors")
m4["input_size"] = "16"
save("four.safetensors", four, m4)
mp_resnet.write_safetensors("other.safetensors", {"a": np.zeros(3, np.float32)},
                            {"format": "something-else"})
EOF
	# the first macrobatch of the stream with label 9 in record 0, CRCs mended
	"$PY" - <<'EOF'
import struct, zlib
b = bytearray(open("val.stream", "rb").read())
off = 16
while off < len(b):
    kind, n = struct.unpack_from("<II", b, off)
    if kind == 2:
        mb = off + 8
        struct.pack_into("<i", b, mb + 32, 9)
        struct.pack_into("<I", b, mb + n - 4, zlib.crc32(bytes(b[mb:mb + n - 4])))
        struct.pack_into("<I", b, mb + n, zlib.crc32(bytes(b[off:mb + n])))
        break
    off += 8 + n + 4
open("label9.stream", "wb").write(b)
EOF
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
}

@test "known answer: logits that are fc_bn's bias give the errors, probabilities and tables they must" {
	run ev -m "$D/const.safetensors" --json --probs p.tsv --per-class pc.tsv --confusion cf.tsv \
		--submission sub.txt "$D/val.db"
	assert_status 0
	# the ranking is 3 5 1 2 4 0 for every image; 6 images of each class
	assert_equal "$(json_get - 'd["images"], d["classes"], d["topk"], d["labelled"]' <<<"$output")" \
		"(36, 6, 5, True)"
	assert_equal "$(json_get - '"%.6f %.6f" % (d["combined"]["top1_err"], d["combined"]["topk_err"])' <<<"$output")" \
		"0.833333 0.166667"
	assert_equal "$(json_get - '"%.6f %.6f" % (d["scales"][0]["top1_err"], d["scales"][0]["topk_err"])' <<<"$output")" \
		"0.833333 0.166667"
	assert_equal "$(json_get - 'd["scales"][0]["size"]' <<<"$output")" 16
	assert_equal "$(json_get - 'abs(d["images_per_second"] * d["seconds"] - 36) < 1e-6 and d["seconds"] > 0' <<<"$output")" True
	# every row is softmax(b)
	run "$PY" -c '
import math, sys
b = [0.1, 0.5, 0.3, 0.9, 0.2, 0.7]
s = sum(math.exp(v) for v in b)
want = [math.exp(v) / s for v in b]
rows = [l.rstrip("\n").split("\t") for l in open("p.tsv")]
assert rows[0] == ["name", "label"] + ["p%d" % j for j in range(6)], rows[0]
assert len(rows) == 37
print(max(abs(float(p) - w) for r in rows[1:] for p, w in zip(r[2:], want)))'
	assert_status 0
	assert_less "$output" 1e-7
	assert_equal "$(cut -f1,2 p.tsv | sed -n 2,3p | tr '\t\n' ' ')" "im/cls0000.png 0 im/cls0001.png 1 "
	assert_equal "$(sort -u <(cut -d' ' -f2- sub.txt))" "3 5 1 2 4"
	assert_equal "$(sed -n 1p pc.tsv)" "$(printf 'class\tname\timages\ttop1_err\ttop5_err')"
	assert_equal "$(awk -F'\t' 'NR > 1 { print $1, $3, $4, $5 }' pc.tsv | tr '\n' ,)" \
		"0 6 1.00000 1.00000,1 6 1.00000 0.00000,2 6 1.00000 0.00000,3 6 0.00000 0.00000,4 6 1.00000 0.00000,5 6 1.00000 0.00000,"
	# everything is predicted as class 3
	assert_equal "$(sed -n 1p cf.tsv)" "$(printf 'label\\predicted\t0\t1\t2\t3\t4\t5')"
	assert_equal "$(awk -F'\t' 'NR > 1 { print $5 }' cf.tsv | tr '\n' ' ')" "6 6 6 6 6 6 "
	assert_equal "$(awk -F'\t' 'NR > 1 { s += $2 + $3 + $4 + $6 + $7 } END { print s }' cf.tsv)" 0
	# the table; --topk 3 counts 3, 5 and 1; --topk 9 is clamped to the 6 classes
	run ev -m "$D/const.safetensors" --topk 3 "$D/val.db"
	assert_status 0
	assert_contains "$output" "mp-eval: $D/const.safetensors on $D/val.db: 36 images, 1 scale x 1 view"
	assert_contains "$output" "$(printf '%-10s %10s %10s' scale 'top-1 err' 'top-3 err')"
	assert_contains "$output" "$(printf '%-10s %9.2f%% %9.2f%%' combined 83.33 50.00)"
	run ev -m "$D/const.safetensors" --topk 9 --json --submission sub9.txt "$D/val.db"
	assert_equal "$(json_get - 'd["topk"], d["combined"]["topk_err"]' <<<"$output")" "(6, 0)"
	assert_equal "$(sort -u <(cut -d' ' -f2- sub9.txt))" "3 5 1 2 4 0"
}

@test "the known answer agrees with PyTorch on random weights, probabilities and errors" {
	run ev -m "$D/rand.safetensors" --json --probs p.tsv "$D/val.db"
	assert_status 0
	json=$output
	run "$PY" - "$MP_ROOT/scripts" "$D/rand.safetensors" "$D/val.db" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
import mp_dataset, mp_resnet
net, meta = mp_resnet.load(sys.argv[2])
mean = np.array([float(v) for v in meta["mean"].split(",")])
ds = mp_dataset.Dataset(sys.argv[3])
x = np.stack([(ds.image(i).astype(np.float64) - mean).transpose(2, 0, 1) for i in range(len(ds))])
with torch.no_grad():
    p = torch.softmax(net(torch.tensor(x, dtype=torch.float32)).double(), 1).numpy()
rows = [l.rstrip("\n").split("\t") for l in open("p.tsv")][1:]
ours = np.array([[float(v) for v in r[2:]] for r in rows])
order = np.argsort(-p, axis=1, kind="stable")
y = np.array(ds.labels)
top1 = 1 - np.mean(order[:, 0] == y)
top5 = 1 - np.mean([y[i] in order[i, :5] for i in range(len(y))])
print("%.3g %.6f %.6f %d" % (np.abs(ours - p).max(), top1, top5, len(set(order[:, 0]))))
EOF
	assert_status 0
	read -r diff top1 top5 distinct <<<"$output"
	assert_less "$diff" 1e-4
	# the weights are not degenerate: more than one class comes first
	assert_less 1 "$distinct"
	assert_equal "$(json_get - '"%.6f %.6f" % (d["combined"]["top1_err"], d["combined"]["topk_err"])' <<<"$json")" \
		"$top1 $top5"
	# each error reads back as the misses divided by the images, exactly,
	# as the page says (cJSON's own printer stops at 15 digits: 7/48
	# would read back as another double)
	assert_equal "$(json_get - 'all(e == round(e * d["images"]) / d["images"] for e in
		(d["combined"]["top1_err"], d["combined"]["topk_err"], d["scales"][0]["top1_err"]))' <<<"$json")" True
}

@test "multiscale: the combination is the mean of the single-scale runs' probabilities; logit is the softmax of the mean logits" {
	for s in 12 16 24 32; do
		ev -q -m "$D/rand.safetensors" --scales $s --probs p$s.tsv "$D/val.db"
	done
	run ev -m "$D/rand.safetensors" --scales 12,16,24,32 --probs all.tsv --json "$D/val.db"
	assert_status 0
	assert_equal "$(json_get - '[s["size"] for s in d["scales"]]' <<<"$output")" "[12, 16, 24, 32]"
	# each scale's own errors are those of its single run
	for i in 0 3; do
		s=$(json_get - "d['scales'][$i]['size']" <<<"$output")
		one=$(ev -m "$D/rand.safetensors" --scales "$s" --json "$D/val.db")
		assert_equal "$(json_get - "d['scales'][$i]['top1_err'], d['scales'][$i]['topk_err']" <<<"$output")" \
			"$(json_get - 'd["combined"]["top1_err"], d["combined"]["topk_err"]' <<<"$one")"
	done
	ev -q -m "$D/rand.safetensors" --scales 12,16,24,32 --combine logit --probs logit.tsv "$D/val.db"
	run "$PY" - <<'EOF'
import numpy as np
def load(f):
    return np.array([[float(v) for v in l.split("\t")[2:]] for l in open(f).readlines()[1:]])
single = np.stack([load("p%d.tsv" % s) for s in (12, 16, 24, 32)])
mean = single.mean(0)
# log p = logit - logsumexp: the softmax of the mean log p is that of the mean logit
z = np.log(single).mean(0)
soft = np.exp(z - z.max(1, keepdims=True))
soft /= soft.sum(1, keepdims=True)
print("%.3g %.3g %.3g" % (np.abs(load("all.tsv") - mean).max(), np.abs(load("logit.tsv") - soft).max(),
                          np.abs(single[0] - single[3]).max()))
EOF
	assert_status 0
	read -r dprob dlogit spread <<<"$output"
	assert_less "$dprob" 2e-8
	assert_less "$dlogit" 1e-6
	# the scales differ, so the check means something
	assert_less 0.01 "$spread"
	# --multiscale is the reference's four scales
	run ev -m "$D/rand.safetensors" --multiscale --json "$D/val.db"
	assert_equal "$(json_get - '[s["size"] for s in d["scales"]]' <<<"$output")" "[112, 128, 160, 240]"
}

@test "views: --dump-views writes the resized image, its crops and mirrors as they are defined" {
	# at the stored size the view is the stored image itself
	ev -q -m "$D/rand.safetensors" --scales 16,24 --flip --dump-views full --dump-count 2 "$D/val.db"
	assert_files full 000000-s16-v0.png 000000-s16-v1.png 000000-s24-v0.png 000000-s24-v1.png \
		000001-s16-v0.png 000001-s16-v1.png 000001-s24-v0.png 000001-s24-v1.png
	assert_equal "$(mkimg compare full/000001-s16-v0.png "$D/im/cls0001.png")" "0 0.000"
	ev -q -m "$D/rand.safetensors" --scales 24 --crops 10 --dump-views ten "$D/val.db"
	ev -q -m "$D/rand.safetensors" --scales 24 --crops 5 --flip --dump-views fiveflip "$D/val.db"
	ev -q -m "$D/rand.safetensors" --scales 25 --crops center --flip --dump-views center "$D/val.db"
	ev -q -m "$D/rand.safetensors" --scales 25 --dump-views full25 "$D/val.db"
	run "$PY" - <<'EOF'
import numpy as np
from PIL import Image
def px(f):
    return np.asarray(Image.open(f).convert("RGB"))
full, flipped = px("full/000000-s24-v0.png"), px("full/000000-s24-v1.png")
assert full.shape == (24, 24, 3)
assert (flipped == full[:, ::-1]).all(), "the flip is not the mirror image"
# 16 px crops of 24: top left, top right, bottom left, bottom right, centre
boxes = [(0, 0), (8, 0), (0, 8), (8, 8), (4, 4)]
for d in ("ten", "fiveflip"):
    for k, (x, y) in enumerate(boxes):
        crop = full[y:y + 16, x:x + 16]
        assert (px("%s/000000-s24-v%d.png" % (d, k)) == crop).all(), (d, k)
        assert (px("%s/000000-s24-v%d.png" % (d, k + 5)) == crop[:, ::-1]).all(), (d, k + 5)
# 25 - 16 = 9: the centre crop starts at 9 // 2 = 4
f25 = px("full25/000000-s25-v0.png")
assert (px("center/000000-s25-v0.png") == f25[4:20, 4:20]).all()
assert (px("center/000000-s25-v1.png") == f25[4:20, 4:20][:, ::-1]).all()
print("ok")
EOF
	assert_status 0
	assert_equal "$output" ok
	assert_files ten $(for k in 0 1 2 3 4 5 6 7 8 9; do echo 000000-s24-v$k.png; done)
	# ten views per scale, and the flip adds nothing to 10
	run ev -m "$D/rand.safetensors" --scales 24,32 --crops 10 --flip --json "$D/val.db"
	assert_equal "$(json_get - 'd["views_per_scale"], d["crops"], d["flip"]' <<<"$output")" "(10, '10', True)"
	# crops need scales at least as large as the network's input
	run ev -m "$D/rand.safetensors" --scales 12 --crops center "$D/val.db"
	assert_status 2
	assert_contains "$output" "scale 12 is smaller than the crops of 16 pixels"
}

@test "submission on the unlabelled test set: sorted by name, exactly 5 labels a line, no error" {
	run ev -m "$D/rand.safetensors" --submission sub.txt "$D/test.db"
	assert_status 0
	assert_contains "$output" "13 images"
	assert_contains "$output" "no labels: no error to report"
	assert_not_contains "$output" "top-1"
	assert_equal "$(wc -l <sub.txt)" 13
	# the DB is shuffled; the file is not
	assert_equal "$(cut -d' ' -f1 sub.txt)" "$(LC_ALL=C sort "$D/test.txt")"
	assert_equal "$(awk '{ print NF }' sub.txt | sort -u)" 6
	run awk '{ delete s; for (i = 2; i <= 6; i++) { if ($i !~ /^[0-5]$/ || ($i in s)) print "bad: " $0; s[$i] } }' sub.txt
	assert_equal "$output" ""
	# the same labels as the best classes of --probs
	ev -q -m "$D/rand.safetensors" --probs p.tsv "$D/test.db"
	assert_equal "$(awk -F'\t' 'NR > 1 { print $2 }' p.tsv | sort -u)" "-"
	best=$("$PY" -c '
import numpy as np
for l in sorted(open("p.tsv").readlines()[1:]):
    f = l.rstrip("\n").split("\t")
    p = np.array([float(v) for v in f[2:]])
    print(f[0], " ".join(str(j) for j in np.argsort(-p, kind="stable")[:5]))')
	assert_equal "$(cat sub.txt)" "$best"
	# JSON says there were no labels and gives no errors
	run ev -m "$D/rand.safetensors" --json "$D/test.db"
	assert_equal "$(json_get - 'd["labelled"], "combined" in d, list(d["scales"][0])' <<<"$output")" \
		"(False, False, ['size'])"
	# the submission to stdout, with no table
	run ev -m "$D/rand.safetensors" --submission - "$D/test.db"
	assert_status 0
	assert_equal "$output" "$(cat sub.txt)"
}

@test "inputs agree: the DB, the stream on stdin, a stream file and the list give the same results" {
	ev -q -m "$D/rand.safetensors" --scales 16,20 --flip --probs db.tsv --submission db.sub "$D/val.db"
	ev -q -m "$D/rand.safetensors" --scales 16,20 --flip --probs stdin.tsv --submission stdin.sub - <"$D/val.stream"
	ev -q -m "$D/rand.safetensors" --scales 16,20 --flip --probs file.tsv "$D/val.stream"
	ev -q -m "$D/rand.safetensors" --scales 16,20 --flip --probs list.tsv --list "$D/val.txt" -r "$D" \
		--submission list.sub
	cmp db.tsv stdin.tsv
	cmp db.tsv file.tsv
	cmp db.tsv list.tsv
	cmp db.sub stdin.sub
	cmp db.sub list.sub
	# a pipe from mp-batchwriter, the list on stdin
	run bash -c "'$MP_BIN/mp-batchwriter' -q -r '$D' --classes 6 --size 16 '$D/val.txt' |
		'$MP_BIN/mp-eval' -m '$D/rand.safetensors' --scales 16,20 --flip --json --probs pipe.tsv -"
	assert_status 0
	cmp db.tsv pipe.tsv
	ev -q -m "$D/rand.safetensors" --scales 16,20 --flip --probs stdinlist.tsv --list - -r "$D" <"$D/val.txt"
	cmp db.tsv stdinlist.tsv
}

@test "every thread count gives the same output, byte for byte; every batch size too on cpu-ref, within 1e-5 on cpu" {
	for t in 1 2 3; do
		ev -q -m "$D/rand.safetensors" --scales 16,24 --crops 5 --threads $t --batch 7 \
			--probs t$t.tsv --per-class c$t.tsv "$D/val.db"
		cmp t1.tsv t$t.tsv
		cmp c1.tsv c$t.tsv
	done
	# the fast backend's matrix products are blocked by the batch's size
	for b in 1 16; do
		ev -q -m "$D/rand.safetensors" --scales 16,24 --crops 5 --threads 2 --batch $b \
			--probs b$b.tsv "$D/val.db"
		assert_less "$(probs_max_diff t1.tsv b$b.tsv)" 1e-5
	done
	for b in 1 7; do
		ev -q -m "$D/rand.safetensors" --backend cpu-ref --scales 16,24 --batch $b --probs r$b.tsv \
			"$D/val.db"
	done
	cmp r1.tsv r7.tsv
	# the reference backend agrees with the fast one
	ev -q -m "$D/rand.safetensors" --backend cpu-ref --probs ref.tsv "$D/val.db"
	ev -q -m "$D/rand.safetensors" --probs fast.tsv "$D/val.db"
	assert_less "$(probs_max_diff ref.tsv fast.tsv)" 1e-5
}

@test "bad weights: not safetensors, not an mp-resnet, a different class count: exit 1, named" {
	echo hello >junk.safetensors
	run ev -m junk.safetensors "$D/val.db"
	assert_status 1
	assert_contains "$output" "mp-eval: junk.safetensors:"
	run ev -m "$D/other.safetensors" "$D/val.db"
	assert_status 1
	assert_equal "$output" "mp-eval: $D/other.safetensors: not an mp-resnet weights file (metadata format is \"something-else\")"
	run ev -m missing.safetensors "$D/val.db"
	assert_status 1
	assert_contains "$output" "missing.safetensors"
	run ev -m "$D/rand.safetensors" --probs p.tsv "$D/val4.db"
	assert_status 1
	assert_equal "$output" "mp-eval: $D/val4.db has 4 classes, the weights $D/rand.safetensors 6"
	run ev -m "$D/four.safetensors" "$D/val.db"
	assert_status 1
	assert_equal "$output" "mp-eval: $D/val.db has 6 classes, the weights $D/four.safetensors 4"
	assert_files .  junk.safetensors
}

@test "weights that give NaN or infinite logits, as a diverged run leaves them: exit 1, the image named, nothing written" {
	# a NaN compares false with everything: each image would rank its
	# label first, and the run report no error at all
	"$PY" - "$MP_ROOT/scripts" "$D/rand.safetensors" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import mp_resnet
for name, value in (("nan", np.nan), ("inf", np.inf)):
    t, meta = mp_resnet.read_safetensors(sys.argv[2])
    t["fc_bn.bias"][2] = value
    meta["crc32"] = mp_resnet.data_crc32(t)
    mp_resnet.write_safetensors(name + ".safetensors", t, meta)
EOF
	run ev -m nan.safetensors --scales 16,24 --probs p.tsv --submission s.txt --per-class c.tsv "$D/val.db"
	assert_status 1
	assert_equal "$output" "mp-eval: $D/val.db: record 0 (im/cls0000.png): the network's output for class 2 is NaN (scale 16, view 0): the weights hold NaN or infinity, or overflow"
	run ev -m inf.safetensors --crops 10 --scales 24 --batch 5 --list "$D/val.txt" -r "$D"
	assert_status 1
	assert_equal "$output" "mp-eval: $D/im/cls0000.png ($D/val.txt line 1): the network's output for class 2 is infinite (scale 24, view 0): the weights hold NaN or infinity, or overflow"
	assert_files . inf.safetensors nan.safetensors
}

@test "bad data: a label out of range, a truncated stream, a missing or bad image, no labels for --per-class: exit 1, nothing written" {
	printf 'im/cls0000.png 0\nim/cls0001.png 7\n' >bad.txt
	run ev -m "$D/rand.safetensors" --list bad.txt -r "$D"
	assert_status 1
	assert_equal "$output" "mp-eval: bad.txt line 2: label 7 is outside 0..5 (the class count)"
	run ev -m "$D/rand.safetensors" --probs p.tsv - <"$D/label9.stream"
	assert_status 1
	assert_equal "$output" "mp-eval: <stdin>: record 0 (im/cls0000.png) has label 9, outside 0..5"
	# cut inside a frame, and cut just before the end frame
	size=$(stat -c %s "$D/val.stream")
	run bash -c "head -c $((size / 2)) '$D/val.stream' | '$MP_BIN/mp-eval' -m '$D/rand.safetensors' --probs p.tsv --submission s.txt -"
	assert_status 1
	assert_equal "$output" "mp-eval: <stdin>: truncated stream: frame 2 is cut short"
	"$PY" -c '
import struct, sys
b = open(sys.argv[1], "rb").read()
off = 16
while True:
    kind, n = struct.unpack_from("<II", b, off)
    if kind == 3:
        break
    off += 8 + n + 4
open("noend.stream", "wb").write(b[:off])' "$D/val.stream"
	run ev -m "$D/rand.safetensors" --probs p.tsv --submission s.txt noend.stream
	assert_status 1
	assert_equal "$output" "mp-eval: noend.stream: truncated stream: no end frame after 5 frames"
	printf 'im/cls0000.png 0\nim/nope.png 1\n' >miss.txt
	run ev -m "$D/rand.safetensors" --list miss.txt -r "$D" --probs p.tsv
	assert_status 1
	assert_equal "$output" "mp-eval: $D/im/nope.png (miss.txt line 2): No such file or directory"
	echo 'not an image' >bad.png
	printf '%s/im/cls0000.png 0\nbad.png 1\n' "$D" >badimg.txt
	run ev -m "$D/rand.safetensors" --list badimg.txt
	assert_status 1
	assert_equal "$output" "mp-eval: bad.png (badimg.txt line 2): not a JPEG or PNG file"
	run ev -m "$D/rand.safetensors" --per-class pc.tsv "$D/test.db"
	assert_status 1
	assert_equal "$output" "mp-eval: $D/test.db has no labels: --per-class needs them"
	run ev -m "$D/rand.safetensors" --confusion cf.tsv "$D/test.db"
	assert_status 1
	assert_equal "$output" "mp-eval: $D/test.db has no labels: --confusion needs them"
	: >empty.txt
	run ev -m "$D/rand.safetensors" --list empty.txt
	assert_status 1
	assert_equal "$output" "mp-eval: empty.txt: no images"
	# no partial outputs anywhere
	assert_files . bad.png bad.txt badimg.txt empty.txt miss.txt noend.stream
}

@test "a bad image or label in a batch read while the previous one is evaluated: exit 1, the first bad one named, nothing written" {
	echo 'not an image' >bad.png
	ln -s "$D/im" im
	# batches of 4: the 31st image is read and decoded while images 25..28
	# are evaluated (MP_EVAL_AHEAD=1, as with a GPU), or after them (0, the
	# CPU's default): the same message either way
	awk 'NR == 31 { $1 = "bad.png" } { print }' "$D/val.txt" >late.txt
	head -c 60 "$D/im/$(awk 'NR == 2 { sub("im/", "", $1); print $1 }' "$D/val.txt")" >cut.png
	awk 'NR == 10 { $1 = "cut.png" } NR == 11 { $1 = "gone.png" } { print }' "$D/val.txt" >two.txt
	for ahead in 0 1; do
		export MP_EVAL_AHEAD=$ahead
		run ev -m "$D/rand.safetensors" --list late.txt --batch 4 --probs p.tsv --submission s.txt
		assert_status 1
		assert_equal "$output" "mp-eval: bad.png (late.txt line 31): not a JPEG or PNG file"
		# a decodable file that is no image of the list's size is fine; a broken
		# PNG in the same batch as a later missing file: the earlier line is named
		run ev -m "$D/rand.safetensors" --list two.txt --batch 8 --probs p.tsv
		assert_status 1
		assert_contains "$output" "mp-eval: cut.png (two.txt line 10): "
		# the stream with a bad label in its first macrobatch, at every batch size
		for b in 1 3 36; do
			run ev -m "$D/rand.safetensors" --batch $b --probs p.tsv - <"$D/label9.stream"
			assert_status 1
			assert_equal "$output" "mp-eval: <stdin>: record 0 (im/cls0000.png) has label 9, outside 0..5"
		done
	done
	unset MP_EVAL_AHEAD
	assert_files . bad.png cut.png im late.txt two.txt
}

@test "an output that names an input or another output: exit 2 before anything is read, the input untouched" {
	cp "$D/rand.safetensors" w.st
	cp "$D/val.txt" l.txt
	ln -s "$D/im" im
	cp -r "$D/val.db" v.db
	sum=$(cat w.st l.txt v.db/data.mdb | cksum)
	run ev -q -m w.st --submission w.st "$D/test.db"
	assert_status 2
	assert_equal "$output" "mp-eval: --submission w.st: that is the weights (-m), which it would replace"
	run ev -q -m ./w.st --probs ../"$(basename "$PWD")"/w.st "$D/val.db"
	assert_status 2
	run ev -q -m w.st --probs ./l.txt --list l.txt
	assert_status 2
	assert_equal "$output" "mp-eval: --probs ./l.txt: that is the image list (--list), which it would replace"
	run ev -q -m w.st --confusion v.db/data.mdb v.db
	assert_status 2
	assert_equal "$output" "mp-eval: --confusion v.db/data.mdb: that is the dataset's data, which it would replace"
	run ev -q -m w.st --probs out.tsv --per-class ./out.tsv v.db
	assert_status 2
	assert_equal "$output" "mp-eval: --per-class ./out.tsv: the same file as --probs"
	assert_equal "$(cat w.st l.txt v.db/data.mdb | cksum)" "$sum"
	# an input read from stdin (-) is the file stdin is open on, by any name
	cp "$D/val.stream" v.stream
	sum=$(cat v.stream l.txt | cksum)
	for out in v.stream /dev/stdin; do
		run bash -c '"$@" <v.stream' _ "$MP_BIN/mp-eval" -q -m w.st --probs "$out" -
		assert_status 2
		assert_equal "$output" "mp-eval: --probs $out: that is the dataset, which it would replace"
	done
	run bash -c '"$@" <l.txt' _ "$MP_BIN/mp-eval" -q -m w.st --list - --submission l.txt
	assert_status 2
	assert_equal "$output" "mp-eval: --submission l.txt: that is the image list (--list), which it would replace"
	assert_equal "$(cat v.stream l.txt | cksum)" "$sum"
	# the weights are a file, not stdin
	run bash -c '"$@" <w.st' _ "$MP_BIN/mp-eval" -q -m - v.stream
	assert_status 2
	assert_equal "$output" "mp-eval: -m -: the weights are read from a file, not from stdin"
	rm v.stream
	# distinct outputs are fine
	run ev -q -m w.st --probs p.tsv --submission s.txt v.db
	assert_status 0
	assert_files . im l.txt p.tsv s.txt v.db w.st
}

@test "names with blanks: --probs escapes tabs and backslashes, --submission refuses a blank and names the line" {
	first=$(awk 'NR == 1 { print $1 }' "$D/val.txt")
	mkdir "a b"
	cp "$D/$first" "a b/x.png"
	cp "$D/$first" "$(printf 't\tb.png')"
	cp "$D/$first" 'c\d.png'
	printf 't\tb.png 1\nc\\d.png 2\na b/x.png 3\n' >names.txt
	run ev -q -m "$D/rand.safetensors" --probs - --list names.txt
	assert_status 0
	assert_equal "$(printf '%s\n' "$output" | cut -f1,2 | tail -n +2)" "$(printf 't\\tb.png\t1\nc\\\\d.png\t2\na b/x.png\t3')"
	run ev -q -m "$D/rand.safetensors" --submission s.txt --list names.txt
	assert_status 1
	assert_equal "$output" "mp-eval: names.txt line 1: \"$(printf 't\tb.png')\" has a blank, which a --submission line (the name, then the labels, space-separated) cannot hold"
	[ ! -e s.txt ]
	sed -i 1d names.txt
	run ev -q -m "$D/rand.safetensors" --submission s.txt --list names.txt
	assert_status 1
	assert_contains "$output" "names.txt line 2: \"a b/x.png\" has a blank"
	sed -i 2d names.txt
	run ev -q -m "$D/rand.safetensors" --submission s.txt --list names.txt
	assert_status 0
	assert_equal "$(cut -d' ' -f1 s.txt)" 'c\d.png'
}

@test "-r ROOT: a list's absolute paths are read as they are, as mp-batchwriter does; messages name the file opened" {
	awk -v d="$D" 'NR <= 3 { print d "/" $1, $2 }' "$D/val.txt" >abs.txt
	run ev -q -m "$D/rand.safetensors" -r /nonexistent --list abs.txt --probs p.tsv
	assert_status 0
	assert_equal "$(wc -l <p.tsv)" 4
	printf '/nonexistent/x.png 1\nrel.png 1\n' >two.txt
	run ev -q -m "$D/rand.safetensors" -r /r --list two.txt
	assert_status 1
	assert_equal "$output" "mp-eval: /nonexistent/x.png (two.txt line 1): No such file or directory"
	sed -i 1d two.txt
	run ev -q -m "$D/rand.safetensors" -r /r --list two.txt
	assert_status 1
	assert_equal "$output" "mp-eval: /r/rel.png (two.txt line 1): No such file or directory"
}

@test "MP_EVAL_AHEAD: the same outputs with the next batch prepared ahead or in turn; a bad value exits 1" {
	for ahead in 0 1; do
		MP_EVAL_AHEAD=$ahead ev -q -m "$D/rand.safetensors" --batch 5 --scales 16,20 --probs p$ahead.tsv \
			--submission s$ahead.txt --json "$D/val.db" >j$ahead.json
	done
	cmp p0.tsv p1.tsv
	cmp s0.txt s1.txt
	diff <(grep -v -e seconds -e images_per_second j0.json) <(grep -v -e seconds -e images_per_second j1.json)
	run env MP_EVAL_AHEAD=2 "$MP_BIN/mp-eval" -m "$D/rand.safetensors" "$D/val.db"
	assert_status 1
	assert_equal "$output" "mp-eval: MP_EVAL_AHEAD=2: expected 0 or 1"
	# empty is the default
	MP_EVAL_AHEAD= ev -q -m "$D/rand.safetensors" --batch 5 --scales 16,20 --probs pe.tsv "$D/val.db"
	cmp p0.tsv pe.tsv
}

@test "bad options exit 2 with a message; --backend cuda exits 1 with the reason, auto says why it chose the CPU" {
	W=(-m "$D/rand.safetensors")
	for args in "--crops 7" "--topk 0" "--topk 17" "--scales 0" "--scales 16,x" "--scales 16.5" \
		"--combine mean" "--batch 0" "--threads 0" "--backend gpu" "--precision fp16" \
		"--dump-count 0" "--bogus"; do
		run ev "${W[@]}" $args "$D/val.db"
		assert_status 2
		assert_contains "$output" "mp-eval: "
	done
	# a scale given twice would weigh twice in the combination
	run ev "${W[@]}" --scales 16,20,16 "$D/val.db"
	assert_status 2
	assert_equal "$(first_line "$output")" 'mp-eval: --scales: "16,20,16": scale 16 is given twice'
	# getopt's own messages name the program as ours do, whatever path ran it
	run ev "${W[@]}" -z "$D/val.db"
	assert_equal "$(first_line "$output")" "mp-eval: invalid option -- 'z'"
	run ev "$D/val.db"
	assert_status 2
	assert_contains "$output" "-m WEIGHTS is required"
	run ev "${W[@]}"
	assert_status 2
	assert_contains "$output" "a dataset, - (a stream on stdin) or --list is required"
	run ev "${W[@]}" --list "$D/val.txt" "$D/val.db"
	assert_status 2
	run ev "${W[@]}" -r "$D" "$D/val.db"
	assert_status 2
	assert_contains "$output" "-r ROOT goes with --list"
	run ev "${W[@]}" --dump-count 3 "$D/val.db"
	assert_status 2
	assert_contains "$output" "--dump-count goes with --dump-views"
	run ev "${W[@]}" --probs - --submission - "$D/val.db"
	assert_status 2
	assert_contains "$output" "only one output may go to stdout"
	# without a CUDA backend and a device, cuda is refused with the reason
	# and auto says why it chose the CPU
	run ev "${W[@]}" --backend cuda "$D/val.db"
	if [[ $status -ne 0 ]]; then
		assert_status 1
		assert_contains "$output" "mp-eval: --backend cuda: "
		run ev "${W[@]}" --backend auto "$D/val.db"
		assert_status 0
		assert_contains "$output" "; cpu, "
		assert_contains "$output" " ("
		# bf16 then is refused with auto's reason, not a hint to ask for cuda
		run --separate-stderr ev "${W[@]}" --backend auto --precision bf16 "$D/val.db"
		assert_status 1
		assert_contains "$stderr" "mp-eval: --precision bf16: --backend auto chose cpu ("
		assert_contains "$stderr" "), which computes in fp32 only"
	fi
	run ev "${W[@]}" --backend cpu-ref --precision bf16 "$D/val.db"
	assert_status 1
	assert_contains "$output" "mp-eval: --precision bf16: the cpu-ref backend computes in fp32 only"
	# bf16 needs the CUDA backend; fp32 is named in the summary
	run ev "${W[@]}" --precision bf16 "$D/val.db"
	assert_status 1
	assert_contains "$output" "mp-eval: --precision bf16: the cpu backend computes in fp32 only"
	run ev "${W[@]}" --precision fp32 "$D/val.db"
	assert_status 0
	assert_contains "$output" "; cpu, "
	assert_contains "$output" ", fp32"
	run ev --help
	assert_status 0
	assert_contains "$output" "--multiscale"
	assert_contains "$output" "--precision"
	run ev --version
	assert_status 0
}

@test "--json is valid UTF-8 whatever bytes the weights' and the data's paths hold" {
	cp "$D/const.safetensors" $'w\xfe.safetensors'
	cp -r "$D/val.db" $'val\xff.db'
	ev -q -m $'w\xfe.safetensors' --json $'val\xff.db' >out.json
	run "$PY" -c '
import json, os, sys
d = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))
print(os.fsencode(d["weights"]), os.fsencode(d["data"]))' out.json
	assert_status 0
	assert_equal "$output" "b'w\\xfe.safetensors' b'val\\xff.db'"
}

@test "a dataset whose classes have other names than the weights' is refused, naming the first that differs" {
	for c in 0 1 2 3 4 5; do echo "/c/class$c $c"; done >cats.txt
	sed 's/class3/other3/' cats.txt >other.txt
	"$MP_BIN/mp-batchwriter" -q -r "$D" -c cats.txt --size 16 -o same.db "$D/val.txt"
	"$MP_BIN/mp-batchwriter" -q -r "$D" -c other.txt --size 16 -o other.db "$D/val.txt"
	"$PY" - "$MP_ROOT/scripts" "$D/const.safetensors" <<'PYEOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import mp_resnet
t, meta = mp_resnet.read_safetensors(sys.argv[2])
meta["class_names"] = json.dumps(["/c/class%d" % i for i in range(6)])
for k in ("header_crc32", "crc32"):
    meta.pop(k, None)
meta["crc32"] = mp_resnet.data_crc32(t)
mp_resnet.write_safetensors("named.safetensors", t, meta)
PYEOF
	run ev -q -m named.safetensors same.db
	assert_status 0
	run ev -q -m named.safetensors other.db
	assert_status 1
	assert_equal "$output" 'mp-eval: other.db: its class 3 is "/c/other3", the weights named.safetensors'"'"'s "/c/class3" (pack it with the categories file the network was trained on)'
}

# spin_count [-u VAR...] [VAR=VALUE...]: the GOMP_SPINCOUNT the OpenMP of the mp-eval
# that runs reads (libgomp prints its settings as it starts, the program
# started again printing them once more).
spin_count() {
	env "$@" OMP_DISPLAY_ENV=verbose "$MP_BIN/mp-eval" --version 2>&1 >/dev/null |
		sed -n "s/^ *GOMP_SPINCOUNT = '\([0-9]*\)'$/\1/p" | tail -1
}

@test "OpenMP's threads wait passively unless OMP_WAIT_POLICY or GOMP_SPINCOUNT says otherwise" {
	assert_equal "$(spin_count -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT)" 0
	assert_equal "$(spin_count -u GOMP_SPINCOUNT OMP_WAIT_POLICY=active)" 30000000000
	assert_equal "$(spin_count -u OMP_WAIT_POLICY GOMP_SPINCOUNT=1234)" 1234
	# started through the dynamic loader: not started again (the loader
	# would take --version for the program), so OpenMP's default
	local ldso
	ldso=$(ldd "$MP_BIN/mp-eval" | sed -n 's/^[[:space:]]*\(\/[^ ]*ld-linux[^ ]*\) .*/\1/p' | head -1)
	[[ -x $ldso ]] || fail "no dynamic loader in: $(ldd "$MP_BIN/mp-eval")"
	run env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$ldso" "$MP_BIN/mp-eval" --version
	assert_status 0
	assert_equal "${lines[0]}" "$("$MP_BIN/mp-eval" --version | head -1)"
	# the same results, the arguments passed on whole
	ev -q -m "$D/rand.safetensors" --scales 16,20 --probs passive.tsv "$D/val.db"
	OMP_WAIT_POLICY=active ev -q -m "$D/rand.safetensors" --scales 16,20 --probs active.tsv \
		"$D/val.db"
	cmp passive.tsv active.tsv
}
