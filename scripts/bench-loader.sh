#!/bin/bash
# bench-loader.sh: mp-train's training loader (loader-rate) against the
# PyTorch peer's (loader-rate-torch.py: torch-train.py's Dataset through a
# DataLoader) on the same DB, the recipe's augmentation (scale 128..240,
# crop 112, flip, mean), batch 128, in the same run: images/s with 1 and 2
# threads (or -t LIST), best of 3 each, and the ratio; and the batches of
# mp-train --augment backend on the CPU backend (loader-rate --kept: the
# records decoded once, each batch made from its plan) against the loader.
#
# usage: bench-loader.sh [-n COUNT] [-t THREADS,...] [-k] [WORKDIR]
set -euo pipefail

prog=bench-loader.sh
usage_args="[-n COUNT] [-t THREADS,...] [-k] [WORKDIR]"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
count=2048
threads=1,2
runs=3 # the machine is noisy: best of several runs
keep=0
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${MP_BIN:-$root/build/bin}
sbin=${MP_SCRIPTS:-$root/build/scripts}

help() {
	cat <<EOF
usage: $prog [-n COUNT] [-t THREADS,...] [-k] [WORKDIR]

Generate COUNT synthetic 128x128 JPEGs of 16 classes (gen-bench-images.py),
pack them into a DB and time mp-train's training loader (loader-rate)
against the PyTorch peer's (loader-rate-torch.py) on it: the recipe's
augmentation (scale 128..240, crop 112, flip, mean), batch 128, best of 3
runs for each thread count. Prints images/s and the ratio; then the same
batches made as mp-train --augment backend makes them, on the CPU backend
(loader-rate --kept), and their ratio to the loader's.

  -n COUNT        images, 256 to 1000000 (default 2048)
  -t THREADS,...  loader threads, each 1 to 256 (default 1,2)
  -k              keep the temporary work directory
  -h, --help      show this help

WORKDIR defaults to a new temporary directory, removed at exit unless -k.
A given WORKDIR is kept; images already there for the same COUNT are
reused, and the DB is packed again.
EOF
}

no_long_options "$@"
while getopts ":n:t:kh" opt; do
	case $opt in
	n) number -n "$OPTARG" 256 1000000; count=$((10#$OPTARG)) ;;
	t)
		[[ $OPTARG =~ ^[0-9]+(,[0-9]+)*$ ]] ||
			{ echo "$prog: -t: \"$OPTARG\" is not a list of thread counts" >&2; exit 2; }
		threads=
		for t in ${OPTARG//,/ }; do
			number -t "$t" 1 256
			threads+=${threads:+,}$((10#$t))
		done
		;;
	k) keep=1 ;;
	h) help; exit 0 ;;
	:) usage "-$OPTARG needs a value" ;;
	*) usage "unknown option -$OPTARG" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage "one WORKDIR only, not \"$1\" and \"$2\""
for t in "$bin/mp-batchwriter" "$sbin/loader-rate"; do
	[ -x "$t" ] || die "$t is missing: run make first"
done
need_python numpy PIL lmdb torch

workdir "$@"
img=$work/img
bench_images "$img" "$count" --classes 16 -j 2
"$bin/mp-batchwriter" -q -f -r "$img" -c "$img/categories.txt" -o "$work/train.db" \
	"$img/train.txt" || die "mp-batchwriter failed"

best() { # CMD...: the best images/s of $runs runs; a run that fails shows its errors
	local b=0 v
	for _ in $(seq "$runs"); do
		if ! v=$("$@" 2>"$work/stderr" | awk '$1 == "images_per_second" { print $2 }') ||
			[ -z "$v" ]; then
			cat "$work/stderr" >&2
			die "failed: $*"
		fi
		b=$(awk -v a="$v" -v b="$b" 'BEGIN { print (a > b) ? a : b }')
	done
	echo "$b"
}

# the whole batches of 128 in the DB, twice over
# shellcheck disable=SC2017 # the division rounds down on purpose
batches=$((count / 128 * 2))
[ "$batches" -le 60 ] || batches=60
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
printf '%-8s %14s %14s %8s %14s %8s\n' threads mp-train PyTorch ratio kept-cpu kept/mp
for t in ${threads//,/ }; do
	ours=$(best "$sbin/loader-rate" -t "$t" -n "$batches" "$work/train.db")
	peer=$(best "$python" "$here/loader-rate-torch.py" -t "$t" -n "$batches" "$work/train.db")
	kept=$(best "$sbin/loader-rate" --kept -t "$t" -n "$batches" "$work/train.db")
	printf '%-8s %14.0f %14.0f %7.2fx %14.0f %7.2fx\n' "$t" "$ours" "$peer" "$(ratio "$ours" "$peer")" \
		"$kept" "$(ratio "$kept" "$ours")"
done
