#!/bin/bash
# bench-loader.sh: mp-train's training loader (loader-rate) against the
# PyTorch peer's (loader-rate-torch.py: torch-train.py's Dataset through a
# DataLoader) on the same DB, the recipe's augmentation (scale 128..240,
# crop 112, flip, mean), batch 128, in the same run: images/s with 1 and 2
# threads (or -t LIST), best of 3 each, and the ratio.
#
# usage: bench-loader.sh [-n COUNT] [-t THREADS,...] [-k] [WORKDIR]
set -euo pipefail

prog=bench-loader.sh
count=2048
threads=1,2
runs=3 # the machine is noisy: best of several runs
keep=0
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${MP_BIN:-$root/build/bin}
sbin=${MP_SCRIPTS:-$root/build/scripts}

usage() {
	echo "usage: $prog [-n COUNT] [-t THREADS,...] [-k] [WORKDIR]" >&2
	exit 2
}
while getopts "n:t:kh" opt; do
	case $opt in
	n) count=$OPTARG ;;
	t) threads=$OPTARG ;;
	k) keep=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
[[ $count =~ ^[0-9]+$ ]] && [ "$count" -ge 256 ] || { echo "$prog: -n $count: expected 256 or more" >&2; exit 2; }
[[ $threads =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "$prog: -t $threads: expected a list of thread counts" >&2; exit 2; }
for t in "$bin/mp-batchwriter" "$sbin/loader-rate"; do
	[ -x "$t" ] || { echo "$prog: $t is missing: run make first" >&2; exit 1; }
done
work=${1:-$(mktemp -d)}
mkdir -p "$work"
[ "$keep" = 1 ] || [ $# = 1 ] || trap 'rm -rf "$work"' EXIT

"$python" "$here/gen-bench-images.py" "$work/img" "$count" --classes 16 -j 2 >&2
"$bin/mp-batchwriter" -q -r "$work/img" -c "$work/img/categories.txt" -o "$work/train.db" \
	"$work/img/train.txt"

best() { # CMD...: the best images/s of $runs runs
	local b=0 v
	for _ in $(seq "$runs"); do
		v=$("$@" 2>/dev/null | awk '$1 == "images_per_second" { print $2 }')
		[ -n "$v" ] || { echo "$prog: $* failed" >&2; exit 1; }
		b=$(awk -v a="$v" -v b="$b" 'BEGIN { print (a > b) ? a : b }')
	done
	echo "$b"
}

batches=$((count / 128 * 2))
[ "$batches" -le 60 ] || batches=60
printf '%-8s %14s %14s %8s\n' threads mp-train PyTorch ratio
for t in ${threads//,/ }; do
	ours=$(best "$sbin/loader-rate" -t "$t" -n "$batches" "$work/train.db")
	peer=$(best "$python" "$here/loader-rate-torch.py" -t "$t" -n "$batches" "$work/train.db")
	printf '%-8s %14.0f %14.0f %7.2fx\n' "$t" "$ours" "$peer" "$(awk -v a="$ours" -v b="$peer" 'BEGIN { print a / b }')"
done
