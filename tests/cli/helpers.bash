# Shared by the command-line tests (load helpers).
#
# make test sets MP_BIN, MP_SCRIPTS and MP_ROOT; when bats is run by hand
# they default to the build of this checkout.

bats_require_minimum_version 1.5.0

# A test that hangs fails instead of stopping the whole suite.
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-60}

: "${MP_ROOT:=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}"
: "${MP_BIN:=$MP_ROOT/build/bin}"
: "${MP_SCRIPTS:=$MP_ROOT/build/scripts}"

# The system Python carries PIL and numpy (python3-pil, python3-numpy); a
# python3 found first on PATH may not. MP_TEST_PYTHON chooses another (a GPU
# machine's, say).
if [[ -n ${MP_TEST_PYTHON:-} ]]; then
	PY=$MP_TEST_PYTHON
elif [[ -x /usr/bin/python3 ]]; then
	PY=/usr/bin/python3
else
	PY=python3
fi
MKIMAGES="$BATS_TEST_DIRNAME/mkimages.py"

# Each test works in its own empty directory (bats keeps files of its own
# in $BATS_TEST_TMPDIR, so a subdirectory can be listed exactly).
setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work" || return
}

bw() { "$MP_BIN/mp-batchwriter" "$@"; }
inspect() { "$MP_BIN/mp-inspect" "$@"; }
mkimg() { "$PY" "$MKIMAGES" "$@"; }

# ---- assertions: each says what it expected when it fails ----------------

fail() {
	printf '%s\n' "$@" >&2
	return 1
}

# assert_equal ACTUAL EXPECTED
assert_equal() {
	[[ "$1" == "$2" ]] || fail "expected: $2" "actual:   $1"
}

# assert_status N: the last `run` exited with N.
# shellcheck disable=SC2154 # status, output: set by bats' run
assert_status() {
	[[ "$status" -eq "$1" ]] ||
		fail "expected exit status $1, got $status" "output: $output" "stderr: ${stderr-}"
}

# assert_contains HAYSTACK NEEDLE
assert_contains() {
	[[ "$1" == *"$2"* ]] || fail "expected to find: $2" "in: $1"
}

assert_not_contains() {
	[[ "$1" != *"$2"* ]] || fail "expected not to find: $2" "in: $1"
}

# assert_less A B: A < B, as decimal numbers.
assert_less() {
	awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }' || fail "expected $1 < $2"
}

# assert_no_db NAME: nothing under NAME and no NAME.partial-* beside it.
assert_no_db() {
	[[ ! -e "$1" && ! -L "$1" ]] || fail "$1 exists: $(ls -la "$1" 2>&1)"
	local left
	left=$(compgen -G "$1.partial-*") && fail "left behind: $left"
	return 0
}

# assert_files DIR NAME...: DIR holds exactly these names (sorted).
assert_files() {
	local dir=$1
	shift
	local want got
	want=$(printf '%s\n' "$@" | LC_ALL=C sort)
	# shellcheck disable=SC2012 # the tests' own names: no newline in them
	got=$(cd "$dir" && LC_ALL=C ls -A | LC_ALL=C sort)
	assert_equal "$got" "$want"
}

# json_get FILE|- EXPR: evaluates a Python expression on the JSON document d.
json_get() {
	local src=$1
	shift
	if [[ "$src" == - ]]; then
		"$PY" -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
	else
		"$PY" -c 'import json, sys; d = json.load(open(sys.argv[2])); print(eval(sys.argv[1]))' "$1" "$src"
	fi
}

# stats_json DATASET: the summary --json without the fields that name the
# container (dataset path, LMDB or stream).
stats_json() {
	inspect --json "$1" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
del d["dataset"], d["container"]
print(json.dumps(d, sort_keys=True, indent=1))'
}

# on_tty COMMAND...: runs COMMAND with a terminal as its standard input,
# output and error (a pseudo-terminal from util-linux script(1)); run
# on_tty ... gives its exit status and its output with CRLF line ends.
# The test is skipped where script(1) is missing.
on_tty() {
	command -v script >/dev/null || skip "script(1) is not installed"
	local cmd
	printf -v cmd '%q ' "$@"
	script -qec "$cmd" /dev/null
}

# What mp-batchwriter and mp-eval add to the message of a missing image
# whose relative path was read without -r.
# shellcheck disable=SC2034 # read by the test files that load this one
NO_ROOT=" (no -r given: the list's paths are read from the current directory)"

# asan_build: whether the programs were built with AddressSanitizer (make
# SAN=address).
asan_build() {
	nm "$MP_BIN/mp-batchwriter" 2>/dev/null | grep -q __asan_init
}

# limit_memory KIB COMMAND...: runs COMMAND in an address space of KIB KiB
# (ulimit -v), where an allocation larger than what is left fails. A
# program built with AddressSanitizer reserves terabytes of address space
# for its shadow memory and cannot start under that limit: it gets ASan's
# own instead, a malloc of more than KIB KiB returning NULL.
limit_memory() {
	local kib=$1
	shift
	if asan_build; then
		ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}max_allocation_size_mb=$((kib / 1024)):allocator_may_return_null=1" "$@"
	else
		(ulimit -v "$kib" && exec "$@")
	fi
}

# no_leak_check COMMAND...: COMMAND without LeakSanitizer, for a program of
# a SAN=address build run under strace or where no thread can start
# (ulimit -u): LeakSanitizer's check at the exit cannot work under ptrace,
# nor without a thread of its own, and ends the program with an error.
no_leak_check() {
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$@"
}

# closed_pipe COMMAND...: runs COMMAND with stdout a pipe whose reader has
# gone already (as after mp-train | head -1), so that its first write
# raises SIGPIPE; its exit status is the command's, 128 + N for signal N.
closed_pipe() {
	"$PY" -c '
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
p = subprocess.run(sys.argv[1:], stdout=w)
sys.exit(p.returncode if p.returncode >= 0 else 128 - p.returncode)' "$@"
}

# first_line TEXT
first_line() {
	printf '%s\n' "$1" | head -n 1
}

# class_data: in the current directory, 128 training and 48 validation
# images of 4 learnable classes, 20x20 (train.txt, val.txt), their class
# names (cats.txt) and both packed at 16x16 (train.db, val.db): the data
# of the training tests.
class_data() {
	"$PY" "$MKIMAGES" classes tr 128 20 20 4 >train.txt
	"$PY" "$MKIMAGES" classes va 48 20 20 4 seed=9 >val.txt
	printf 'red 0\ngreen 1\nblue 2\nyellow 3\n' >cats.txt
	"$MP_BIN/mp-batchwriter" -q -c cats.txt --size 16 -o train.db train.txt
	"$MP_BIN/mp-batchwriter" -q -c cats.txt --size 16 -o val.db val.txt
}

# random_weights CLASSES OUT: random weights of the smallest network (depth
# 1, widths 4,8, shortcut A, seed 7) of CLASSES classes for 16 px inputs.
random_weights() {
	"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A "$1" 7 "$2.init" >/dev/null
	"$PY" - "$MP_ROOT/scripts" "$2.init" "$2" <<'END'
import sys
sys.path.insert(0, sys.argv[1])
import mp_resnet
t, meta = mp_resnet.read_safetensors(sys.argv[2])
meta["input_size"] = "16"
meta["crc32"] = mp_resnet.data_crc32(t)
mp_resnet.write_safetensors(sys.argv[3], t, meta)
END
	rm -f "$2.init"
}

# ---- the CUDA module on the emulated device (emucuda.bats, emufail.bats) ----

# has_cuda: whether the last build had the CUDA backend
has_cuda() { grep -q 'cuda=yes$' "$MP_BIN/../flags.stamp"; }

# emu_setup_file: the files' data (class_data) in BATS_FILE_TMPDIR/data,
# where the build has CUDA
emu_setup_file() {
	has_cuda || return 0
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d" || return
	class_data
}

# emu_setup MODULE: skips where the build has no CUDA; else MP_CUDA_MODULE
# names MODULE, D the data, NET the smallest network, and the test runs in
# a directory of its own
emu_setup() {
	has_cuda || skip "this build has no CUDA backend, so no emulated device"
	[[ -f $1 ]] || fail "$1 is missing (make unit-tests builds it)"
	export MP_CUDA_MODULE=$1
	# shellcheck disable=SC2034 # read by the test files
	D=$BATS_FILE_TMPDIR/data
	# shellcheck disable=SC2034,SC2054 # read by the test files; 4,8 is one value
	NET=(--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16)
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work" || return
}

# edit_frames STREAM OUT PYTHON: runs PYTHON on the frames f of STREAM (a
# list of [kind, payload], payload a bytearray, the meta frame first) and
# writes them to OUT, each with its CRC made anew. PYTHON may use
# get_meta() and set_meta(m) (the meta document as a dict, written back
# with its own CRC), item(mb, i) (where record i of a macrobatch payload
# starts) and fix(mb) (the macrobatch's CRC made anew).
edit_frames() {
	"$PY" -c '
import struct, sys, zlib
sys.path.insert(0, sys.argv[4])
import mp_dataset
d = open(sys.argv[1], "rb").read()
f, pos = [], 16
while pos < len(d):
    kind, n = struct.unpack_from("<II", d, pos)
    f.append([kind, bytearray(d[pos + 8:pos + 8 + n])])
    pos += 12 + n
def get_meta():
    return mp_dataset.load_meta(f[0][1])
def set_meta(m):
    f[0][1] = bytearray(mp_dataset.meta_bytes(m))
def item(mb, i):
    return 32 + 32 * i
def fix(mb):
    mb[-4:] = struct.pack("<I", zlib.crc32(bytes(mb[:-4])))
exec(sys.argv[3])
out = bytearray(d[:16])
for kind, payload in f:
    frame = struct.pack("<II", kind, len(payload)) + payload
    out += frame + struct.pack("<I", zlib.crc32(frame))
open(sys.argv[2], "wb").write(out)' "$@" "$MP_ROOT/scripts"
}

# comma_locale: makes the locale de_DE.UTF-8, whose decimal separator is a
# comma, usable: the system's, or else compiled for this test alone
# (LOCPATH) from the sources of Debian's locales package; skips the test
# where neither can be had.
comma_locale() {
	[[ $(LC_ALL=de_DE.UTF-8 locale decimal_point 2>/dev/null) == , ]] && return
	local dir=$BATS_TEST_TMPDIR/locales
	mkdir -p "$dir"
	localedef -i de_DE -f UTF-8 "$dir/de_DE.UTF-8" >/dev/null 2>&1
	export LOCPATH=$dir
	[[ $(LC_ALL=de_DE.UTF-8 locale decimal_point 2>/dev/null) == , ]] ||
		skip "the locale de_DE.UTF-8 (a decimal comma) is neither installed nor can be made (Debian: locales)"
}

# probs_max_diff A B: the largest difference of two --probs files'
# probabilities; fails unless their names and labels agree.
probs_max_diff() {
	"$PY" - "$1" "$2" <<'EOF'
import sys
a = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
b = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])]
assert a[0] == b[0] and len(a) == len(b), "headers or lengths differ"
d = 0.0
for x, y in zip(a[1:], b[1:]):
    assert x[:2] == y[:2], (x[:2], y[:2])
    d = max([d] + [abs(float(p) - float(q)) for p, q in zip(x[2:], y[2:])])
print("%.3g" % d)
EOF
}
