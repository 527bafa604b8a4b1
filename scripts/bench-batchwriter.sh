#!/bin/bash
# bench-batchwriter.sh: time mp-batchwriter against its two peers on the same
# images in the same run: libjpeg-turbo's single-thread decode rate (the
# limit for any writer that must decode to validate and compute the mean)
# and a straightforward single-process Python writer (py-batchwriter.py).
#
# usage: bench-batchwriter.sh [-n COUNT] [-k] [WORKDIR]
set -euo pipefail

prog=bench-batchwriter.sh
usage_args="[-n COUNT] [-k] [WORKDIR]"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
count=3000
runs=5 # the machine is noisy: best of several runs
keep=0
python=${PYTHON:-/usr/bin/python3}

help() {
	cat <<EOF
usage: $prog [-n COUNT] [-k] [WORKDIR]

Generate COUNT synthetic 128x128 JPEGs (gen-bench-images.py) and time, best
of 5 each: jpeg-decode-rate (decode limit, one thread), mp-batchwriter -j 1
and -j 2, and py-batchwriter.py. Prints images/s and the ratios to the peers.

  -n COUNT   number of images (default 3000)
  -k         keep the temporary work directory
  -h, --help show this help

WORKDIR defaults to a new temporary directory, removed at exit unless -k.
A given WORKDIR is kept; images already there for the same COUNT are reused.
EOF
}

no_long_options "$@"
while getopts ":n:kh" opt; do
	case $opt in
	n)
		if ! [[ $OPTARG =~ ^[0-9]{1,7}$ ]] ||
		    ((10#$OPTARG < 1 || 10#$OPTARG > 1000000)); then
			echo "$prog: -n: \"$OPTARG\" is not a number" \
			    "from 1 to 1000000" >&2
			exit 2
		fi
		count=$((10#$OPTARG))
		;;
	k) keep=1 ;;
	h)
		help
		exit 0
		;;
	:) usage "-$OPTARG needs a value" ;;
	*) usage "unknown option -$OPTARG" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage "one WORKDIR only, not \"$1\" and \"$2\""
need_python numpy PIL lmdb

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir=$repo/build/bin
scriptdir=$repo/build/scripts
mp=$bindir/mp-batchwriter
decode=$scriptdir/jpeg-decode-rate

workdir "$@"

if [ ! -x "$mp" ] || [ ! -x "$decode" ]; then
	echo "$prog: building in $repo" >&2
	(make_built "$repo") || echo "$prog: warning: make failed" >&2
fi
[ -x "$decode" ] || die "$decode is missing (make failed?)"

root=$work/images
list=$root/train.txt
bench_images "$root" "$count"

# Read every image once so that all timed runs find them in the page cache.
find "$root" -type f -name '*.jpg' -exec cat {} + >/dev/null
mean_bytes=$(find "$root" -type f -name '*.jpg' -printf '%s\n' |
	awk '{ s += $1; n++ } END { printf "%.0f", n ? s / n : 0 }')

# run_checked CMD...: run, keeping stderr; on failure show it and stop.
run_checked() {
	if ! "$@" 2>"$work/stderr"; then
		cat "$work/stderr" >&2
		die "failed: $*"
	fi
}

# best_of_runs SETUP CMD...: wall seconds of the fastest of $runs runs of CMD, in
# $best; SETUP (a command, ":" for none) runs untimed before each.
best_of_runs() {
	local setup=$1 t0 t1
	shift
	best=
	for _ in $(seq "$runs"); do
		$setup
		t0=$(date +%s.%N)
		run_checked "$@"
		t1=$(date +%s.%N)
		best=$(awk -v a="$t0" -v b="$t1" -v m="$best" \
			'BEGIN { t = b - a; if (m != "" && m < t) t = m; printf "%.6f", t }')
	done
}

rate() { # images per second for $best seconds
	awk -v n="$count" -v t="$1" 'BEGIN { printf "%.1f", (t > 0 ? n / t : 0) }'
}

ratio() { # NUM DEN -> NUM / DEN, or n/a
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "" || b == "" || b + 0 == 0) print "n/a";
		else printf "%.2f", a / b }'
}

verdict() { # VALUE GOAL -> met / NOT met
	awk -v v="$1" -v g="$2" 'BEGIN {
		if (v == "n/a") print "-"; else print (v + 0 >= g ? "met" : "NOT met") }'
}

# Decode limit: jpeg-decode-rate times its decode loop itself (files
# already in memory), so take the best of its own 3 reports.
echo "$prog: timing jpeg-decode-rate" >&2
decode_rate=
for _ in $(seq "$runs"); do
	run_checked "$decode" "$list" "$root" >"$work/decode.out"
	r=$(awk '$1 == "images_per_second" { print $2 }' "$work/decode.out")
	[ -n "$r" ] || die "jpeg-decode-rate printed no images_per_second"
	decode_rate=$(awk -v a="$r" -v m="$decode_rate" \
		'BEGIN { if (m != "" && m > a) a = m; print a }')
done

# Both cores decoding at once: what two workers can reach on this machine
# (the sum of two concurrent single-thread decoders, best of $runs).
echo "$prog: timing two jpeg-decode-rate processes at once" >&2
two_decode=
for _ in $(seq "$runs"); do
	"$decode" "$list" "$root" >"$work/decode1.out" 2>/dev/null &
	pid=$!
	run_checked "$decode" "$list" "$root" >"$work/decode2.out"
	wait "$pid" || die "jpeg-decode-rate failed"
	r=$(awk '$1 == "images_per_second" { s += $2 } END { print s }' \
		"$work/decode1.out" "$work/decode2.out")
	two_decode=$(awk -v a="$r" -v m="$two_decode" \
		'BEGIN { if (m != "" && m > a) a = m; print a }')
done

to_null() { "$@" >/dev/null; }

mp_j1=''
mp_j2=''
mp_s1=''
if [ -x "$mp" ]; then
	echo "$prog: timing mp-batchwriter -j 1 and -j 2" >&2
	best_of_runs : "$mp" -q -j 1 --force -r "$root" -o "$work/db" "$list"
	mp_j1=$(rate "$best")
	best_of_runs : to_null "$mp" -q -j 1 -r "$root" "$list"
	mp_s1=$(rate "$best")
	best_of_runs : "$mp" -q -j 2 --force -r "$root" -o "$work/db" "$list"
	mp_j2=$(rate "$best")
else
	echo "$prog: mp-batchwriter is not built ($mp missing); skipping it" >&2
fi

echo "$prog: timing py-batchwriter.py" >&2
remove_db2() { rm -rf "$work/db2"; }
best_of_runs remove_db2 "$python" "$repo/scripts/py-batchwriter.py" \
	-r "$root" -o "$work/db2" "$list"
py_rate=$(rate "$best")

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
r_j1_dec=$(ratio "$mp_j1" "$decode_rate")
r_j2_dec=$(ratio "$mp_j2" "$two_decode")
r_j1_py=$(ratio "$mp_j1" "$py_rate")
r_j2_py=$(ratio "$mp_j2" "$py_rate")
show() { echo "${1:-not built}"; }

printf 'machine: %s cores, %s\n' "$(nproc)" "${cpu:-unknown CPU}"
printf 'images:  %d JPEG 128x128, mean %s bytes; best of %d runs each\n\n' \
	"$count" "$mean_bytes" "$runs"
printf '  %-46s %10s\n' "program" "images/s"
printf '  %-46s %10s\n' "decode limit, 1 thread (jpeg-decode-rate)" "$decode_rate"
printf '  %-46s %10s\n' "decode limit, 2 processes at once" "$two_decode"
printf '  %-46s %10s\n' "mp-batchwriter -j 1" "$(show "$mp_j1")"
printf '  %-46s %10s\n' "mp-batchwriter -j 1, stream to /dev/null" "$(show "$mp_s1")"
printf '  %-46s %10s\n' "mp-batchwriter -j 2" "$(show "$mp_j2")"
printf '  %-46s %10s\n\n' "python writer (py-batchwriter.py)" "$py_rate"
printf '  %-46s %6s  %-6s %s\n' "ratio" "value" "goal" ""
printf '  %-46s %6s  %-6s %s\n' "mp-batchwriter -j1 / decode limit (1 core)" \
	"$r_j1_dec" ">= 0.8" "$(verdict "$r_j1_dec" 0.8)"
printf '  %-46s %6s  %-6s %s\n' "mp-batchwriter -j1 stream / decode limit" \
	"$(ratio "$mp_s1" "$decode_rate")" ">= 0.8" "$(verdict "$(ratio "$mp_s1" "$decode_rate")" 0.8)"
printf '  %-46s %6s  %-6s %s\n' "mp-batchwriter -j2 / decode limit (2 at once)" \
	"$r_j2_dec" ">= 0.8" "$(verdict "$r_j2_dec" 0.8)"
printf '  %-46s %6s  %-6s %s\n' "mp-batchwriter -j1 / python" \
	"$r_j1_py" ">= 10" "$(verdict "$r_j1_py" 10)"
printf '  %-46s %6s  %-6s %s\n' "mp-batchwriter -j2 / python" \
	"$r_j2_py" ">= 10" "$(verdict "$r_j2_py" 10)"
# The python writer also decodes with libjpeg-turbo, so on one core no
# writer can beat it by more than this.
printf '\n  %-46s %6s\n' "(ceiling on one core: decode limit / python)" \
	"$(ratio "$decode_rate" "$py_rate")"
[ -x "$mp" ] ||
	echo "  mp-batchwriter is not built: build/bin/mp-batchwriter is missing"
