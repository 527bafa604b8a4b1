#!/bin/bash
# bench-eval.sh: mp-eval's images/s on the CPU for the reference network
# (depth 9, widths 32,64,128,256, trained at 112 px; random weights from
# tests/oracle/resnet_init), single scale and the reference's 4-scale
# multiscale (112,128,160,240), against PyTorch evaluating the same network
# (scripts/mp_resnet.py, eval mode, no_grad) with the same thread count, on
# the same generated 128x128 JPEGs, in the same run. mp-eval is timed as a
# whole run (process start, weights file read and prepared, then read,
# decode, resize, subtract the mean, forward, softmax, combine). PyTorch is
# timed from the first image on, its weights loaded and one untimed forward
# pass (its one-time set-up) before: the ratio against that is the
# conservative one. The PyTorch column with its weights load (module
# construction and loading the file, timed apart) is printed too. Prints
# images/s and the ratios; with -r, the medians of that many rounds, the
# two sides taking turns (on a shared machine the numbers move by a fifth
# from one minute to the next).
#
# usage: bench-eval.sh [-n COUNT] [-b BATCH] [-t THREADS] [-r ROUNDS] [-k] [WORKDIR]
set -euo pipefail

prog=bench-eval.sh
usage_args="[-n COUNT] [-b BATCH] [-t THREADS] [-r ROUNDS] [-k] [WORKDIR]"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
count=128
batch=16
threads=2
rounds=1
keep=0
python=${PYTHON:-/usr/bin/python3}

help() {
	cat <<EOF
usage: $prog [-n COUNT] [-b BATCH] [-t THREADS] [-r ROUNDS] [-k] [WORKDIR]

Generate COUNT synthetic 128x128 JPEGs (gen-bench-images.py), pack them into
a DB as they are, make random weights for the reference network, and time
mp-eval (single scale, then --multiscale) and PyTorch doing the same work
on the same images, each on THREADS threads with batches of BATCH.
Prints images/s and the ratios mp-eval / PyTorch.

  -n COUNT    images (default 128)
  -b BATCH    images per forward pass, both sides (default 16)
  -t THREADS  threads, both sides (default 2)
  -r ROUNDS   measure ROUNDS times, the sides taking turns, and print the
              medians (default 1)
  -k          keep the temporary work directory
  -h, --help  show this help

WORKDIR defaults to a new temporary directory, removed at exit unless -k.
The programs are built with make first, with or without the CUDA backend as
the tree was last built. The machine must be otherwise idle: a second busy
process halves every number.
EOF
}

no_long_options "$@"
while getopts ":n:b:t:r:kh" opt; do
	case $opt in
	n) number -n "$OPTARG" 1 1000000; count=$((10#$OPTARG)) ;;
	b) number -b "$OPTARG" 1 4096; batch=$((10#$OPTARG)) ;;
	t) number -t "$OPTARG" 1 1024; threads=$((10#$OPTARG)) ;;
	r) number -r "$OPTARG" 1 99; rounds=$((10#$OPTARG)) ;;
	k) keep=1 ;;
	h) help; exit 0 ;;
	:) usage "-$OPTARG needs a value" ;;
	*) usage "unknown option -$OPTARG" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage "one WORKDIR only, not \"$1\" and \"$2\""

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
need_python numpy PIL torch
make_built "$root" build/bin/mp-eval build/bin/mp-batchwriter build/tests/oracle/resnet_init
bin=$root/build/bin

workdir "$@"
images=$work/images
bench_images "$images" "$count"
rm -rf "$work/bench.db"
"$bin/mp-batchwriter" -q -r "$images" -c "$images/categories.txt" -o "$work/bench.db" \
	"$images/train.txt" || die "mp-batchwriter failed"
"$root/build/tests/oracle/resnet_init" 9 32,64,128,256 A 100 1 "$work/weights.safetensors" \
	>/dev/null || die "resnet_init failed"

echo "$prog: $(nproc) CPUs, $threads threads, batch $batch, $count images of 128x128," \
	"depth 9, widths 32,64,128,256" >&2

# ours SCALE_OPTIONS...: mp-eval's images/s over the whole run (wall clock)
ours() {
	local t0 t1
	t0=$(date +%s.%N)
	"$bin/mp-eval" -q -m "$work/weights.safetensors" --threads "$threads" --batch "$batch" \
		"$@" "$work/bench.db" || die "mp-eval $* failed"
	t1=$(date +%s.%N)
	awk -v n="$count" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", n / (b - a) }'
}

# PyTorch: the same job, from the JPEG files (PIL decode, PIL bicubic
# resize, as mp-eval resizes), in batches, eval mode. Prints one rate per
# argument: a comma-separated list of scales.
torch_rates() {
	(cd "$root/scripts" && OMP_NUM_THREADS=$threads "$python" - "$work" "$batch" "$threads" "$@" <<'EOF'
import sys, time
import numpy as np
import torch
from PIL import Image
import mp_resnet

work, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
net, meta = mp_resnet.load(work + "/weights.safetensors")
mean = np.array([float(v) for v in meta["mean"].split(",")], np.float32)
paths = [work + "/images/" + l.split()[0] for l in open(work + "/images/train.txt")]

def run(scales):
    t0 = time.perf_counter()
    for b in range(0, len(paths), batch):
        imgs = [Image.open(p).convert("RGB") for p in paths[b:b + batch]]
        prob = 0
        for s in scales:
            x = np.stack([np.asarray(im.resize((s, s), Image.BICUBIC), np.float32) - mean
                          for im in imgs]).transpose(0, 3, 1, 2)
            with torch.no_grad():
                prob = prob + torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x))).double(), 1)
        prob = prob / len(scales)
        prob.argsort(1, descending=True)[:, :5]
    return len(paths) / (time.perf_counter() - t0)

with torch.no_grad():  # warm-up, untimed
    net(torch.zeros(2, 3, 112, 112))
t0 = time.perf_counter()  # what loading the weights costs, apart
mp_resnet.load(work + "/weights.safetensors")
load = time.perf_counter() - t0
print(" ".join("%.2f" % run([int(s) for s in arg.split(",")]) for arg in sys.argv[4:]),
      "%.3f" % load)
EOF
	) || die "PyTorch failed"
}

# median of its arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
all_single=() all_multi=() all_ts=() all_tm=() all_tl=()
for ((round = 1; round <= rounds; round++)); do
	((rounds == 1)) || echo "$prog: round $round of $rounds" >&2
	all_single+=("$(ours)")
	all_multi+=("$(ours --multiscale)")
	# not read <<<"$(...)": that would hide a failure of torch_rates
	rates=$(torch_rates 112 112,128,160,240)
	read -r ts tm tl <<<"$rates"
	[ -n "${tl:-}" ] || die "PyTorch printed no rates: \"$rates\""
	all_ts+=("$ts") all_tm+=("$tm") all_tl+=("$tl")
done
single=$(median "${all_single[@]}") multi=$(median "${all_multi[@]}")
t_single=$(median "${all_ts[@]}") t_multi=$(median "${all_tm[@]}") t_load=$(median "${all_tl[@]}")
((rounds == 1)) || echo "$prog: medians of $rounds rounds; mp-eval single ${all_single[*]}, PyTorch ${all_ts[*]}; multiscale ${all_multi[*]}, PyTorch ${all_tm[*]}" >&2
torch_version=$("$python" -c 'import torch; print(torch.__version__)')

# rate r over n images with the load time added
with_load() { awk -v r="$1" -v n="$count" -v l="$t_load" 'BEGIN { printf "%.2f", n / (n / r + l) }'; }
printf '%-28s %10s %10s %8s %12s %8s\n' "" mp-eval PyTorch ratio "+its load" ratio
for row in "single scale (112), img/s:$single:$t_single" "multiscale (4 scales), img/s:$multi:$t_multi"; do
	IFS=: read -r name ours_rate peer <<<"$row"
	peer_load=$(with_load "$peer")
	awk -v s="$name" -v a="$ours_rate" -v b="$peer" -v c="$peer_load" \
		'BEGIN { printf "%-28s %10.2f %10.2f %8.2f %12.2f %8.2f\n", s, a, b, a / b, c, a / c }'
done
echo "PyTorch $torch_version (loading the weights: $t_load s); goal: mp-eval / PyTorch >= 1.5"
