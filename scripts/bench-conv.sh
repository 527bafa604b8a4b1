#!/bin/bash
# bench-conv.sh: time training steps of the reference network (depth 9,
# widths 32,64,128,256, 112 px; forward, loss, backward, SGD) on the fast
# CPU backend ("cpu": im2col + OpenBLAS SGEMM), the reference backend
# ("cpu-ref": plain loops, only at a small batch, it is slow) and PyTorch on
# the same network (scripts/mp_resnet.py), all with the same thread count,
# in the same run. Prints images/s and the ratios; with -n, the medians of
# that many rounds, the fast backend and PyTorch taking turns (on a shared
# machine the numbers move by tens of percent from one minute to the next).
#
# usage: bench-conv.sh [-b BATCH] [-r REF_BATCH] [-s STEPS] [-t THREADS] [-n ROUNDS]
set -euo pipefail

prog="bench-conv.sh" # quoted: a name, not $bench minus conv
usage_args="[-b BATCH] [-r REF_BATCH] [-s STEPS] [-t THREADS] [-n ROUNDS]"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
batch=32
ref_batch=2
steps=3
threads=2
rounds=1
python=${PYTHON:-/usr/bin/python3}
root=$(cd "$(dirname "$0")/.." && pwd)

help() {
	cat <<EOF
usage: $prog [-b BATCH] [-r REF_BATCH] [-s STEPS] [-t THREADS] [-n ROUNDS]

Time STEPS training steps (after one warm-up step) of the reference network at
112 px on the fast CPU backend (batch BATCH), the reference CPU backend (batch
REF_BATCH, one step) and PyTorch (batch BATCH), each on THREADS threads.
Prints images/s and the ratios. BENCH_OPS=1 adds a per-operation breakdown
for the fast backend.

  -b BATCH      batch for cpu and PyTorch (default 32)
  -r REF_BATCH  batch for cpu-ref, 0 to skip it (default 2)
  -s STEPS      timed steps (default 3)
  -t THREADS    threads (default 2)
  -n ROUNDS     rounds of the fast backend and PyTorch in turn; the medians
                are printed, each round on standard error (default 1)
  -h, --help    show this help

Builds build/tests/oracle/bench_step with make first, with or without the
CUDA backend as the tree was last built. The machine must be
otherwise idle: a second busy process halves every number.
EOF
}

no_long_options "$@"
while getopts ":b:r:s:t:n:h" opt; do
	case $opt in
	b) number -b "$OPTARG" 1 4096; batch=$((10#$OPTARG)) ;;
	r) number -r "$OPTARG" 0 4096; ref_batch=$((10#$OPTARG)) ;;
	s) number -s "$OPTARG" 1 1000; steps=$((10#$OPTARG)) ;;
	t) number -t "$OPTARG" 1 1024; threads=$((10#$OPTARG)) ;;
	n) number -n "$OPTARG" 1 50; rounds=$((10#$OPTARG)) ;;
	h) help; exit 0 ;;
	:) usage "-$OPTARG needs a value" ;;
	*) usage "unknown option -$OPTARG" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage "unexpected argument \"$1\""
need_python numpy torch

ref_note="cpu-ref batch $ref_batch"
[ "$ref_batch" -gt 0 ] || ref_note="no cpu-ref"
echo "$prog: $(nproc) CPUs, $threads threads, batch $batch ($ref_note), $steps steps," \
	"112 px, depth 9, widths 32,64,128,256" >&2
make_built "$root" build/tests/oracle/bench_step
bench=$root/build/tests/oracle/bench_step

rate() { # the images/s field of a bench_step line
	cut -f4 <<<"$1"
}

torch_step=$(cat <<'EOF'
import sys, time
import torch
import torch.nn.functional as F
import mp_resnet

batch, steps, threads = (int(a) for a in sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(7)
net = mp_resnet.ResNet().train()
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
x = torch.rand(batch, 3, 112, 112) * 255 - 120
y = torch.randint(0, 100, (batch,))

def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()

step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
dt = (time.perf_counter() - t0) / steps
print(f"torch\t{batch}\t{threads}\t{batch / dt:.3f}\t{dt:.4f}")
EOF
)

# the median of the numbers on the command line
median() {
	printf '%s\n' "$@" | sort -g |
		awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

fast_rates=() torch_rates=()
for ((round = 1; round <= rounds; round++)); do
	line=$(OMP_NUM_THREADS=$threads "$bench" cpu "$batch" "$steps" "$threads") ||
		die "bench_step cpu failed"
	fast_rates+=("$(rate "$line")")
	line=$(cd "$root/scripts" && OMP_NUM_THREADS=$threads "$python" - "$batch" "$steps" \
		"$threads" <<<"$torch_step") || die "PyTorch failed"
	torch_rates+=("$(rate "$line")")
	[ "$rounds" = 1 ] ||
		echo "$prog: round $round of $rounds: cpu ${fast_rates[-1]}, PyTorch ${torch_rates[-1]} images/s" >&2
done
fast=$(median "${fast_rates[@]}")
torch=$(median "${torch_rates[@]}")
[ "$rounds" = 1 ] || echo "$prog: medians of $rounds rounds" >&2
printf '%-8s batch %4d  %8.2f images/s\n' cpu "$batch" "$fast"

ref=
if [ "$ref_batch" -gt 0 ]; then
	line=$(OMP_NUM_THREADS=$threads "$bench" cpu-ref "$ref_batch" 1 "$threads") ||
		die "bench_step cpu-ref failed"
	ref=$(rate "$line")
	printf '%-8s batch %4d  %8.2f images/s\n' cpu-ref "$ref_batch" "$ref"
fi

printf '%-8s batch %4d  %8.2f images/s  (torch %s)\n' PyTorch "$batch" "$torch" \
	"$("$python" -c 'import torch; print(torch.__version__)')"

awk -v f="$fast" -v r="$ref" -v t="$torch" 'BEGIN {
	printf "cpu / PyTorch   %.2f\n", f / t
	if (r != "") {
		printf "cpu / cpu-ref   %.1f\n", f / r
		printf "cpu-ref / PyTorch %.3f\n", r / t
	}
}'
