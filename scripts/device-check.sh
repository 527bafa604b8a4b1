#!/usr/bin/env bash
# The one command to run on a GPU machine (one H200, no network, PyTorch
# with CUDA pip packages under its python3):
#
#   bash scripts/device-check.sh [--cpu-smoke] [--quick] [--keep-logs] [RESULTS_DIR]
#
# (-- ends the options: a RESULTS_DIR that starts with "-" comes after it;
# the default RESULTS_DIR is ./device-check-results)
#
# Stages, each with a time limit, each logged to logs/<stage>.log, packed
# into RESULTS_DIR/logs.tar.gz after every stage (so that a check stopped
# from outside still brings them back, in few files; --keep-logs leaves
# the folder in RESULTS_DIR too, at the end); a failing stage does not
# stop the others. The figures come first (ours and PyTorch's, training
# and evaluation), then the end-to-end run of the programs, then the
# variants and profiles that explain them:
#   env         the GPU (nvidia-smi), nvcc, python3 and torch
#   discover    nvcc, CUDA_HOME, cuDNN and cuBLAS headers and libraries,
#               cudart's static library (CUDA_HOME first, then the pip
#               packages under site-packages)
#   build       make CUDA=1 CUDA_ARCH=sm_90 all + the tests/gpu programs,
#               with what was found; when that fails (the GPU machine may
#               lack the full build's Debian libraries), a minimal build of
#               what the GPU stages need (build/min/), with small stand-ins
#               for zlib's crc32 and OpenBLAS's sgemm where absent; the
#               build stage still counts as failed then
#   version     build/bin/mp-train --version (full build only)
#   gpu-test_*  build/tests/gpu/test_* (CUDA against the CPU reference)
# the figures:
#   bench-ours-bf16, bench-ours-fp32
#               our training step of the reference network (depth 9,
#               112 px, batch 128, shortcut A) on the GPU in each precision
#   bench-ours-eval-bf16, bench-ours-eval-fp32
#               evaluation: the inference forward pass and the logits'
#               download, as mp-eval's (a CUDA graph)
#   bench-torch-eager, -fp32, -eval-eager, -compile, -eval-compile
#               PyTorch (scripts/mp_resnet.py's ResNet) on the same
#               network and batch: bf16 autocast + channels_last, eager
#               and torch.compile; plain fp32 without TF32 (our fp32's
#               peer); evaluation in eval mode and inference_mode, the
#               logits copied to the host every step
#   bench-ours-bf16-act, bench-ours-eval-bf16-act
#               bf16 with the activations stored in bf16 NHWC
#               (MP_CUDA_ACTIVATIONS=bf16: no conversion around the
#               convolutions, half the bytes in every other pass)
# the programs end to end:
#   train-gpu   mp-batchwriter, the loader's own rate (loader-rate), then
#               mp-train and mp-eval --backend cuda, mp-train again with
#               --augment backend (the same weights, bit for bit), then
#               both again with MP_CUDA_ACTIVATIONS=bf16
#               on 4096 synthetic JPEGs (full build only)
# what explains the figures:
#   gpu-test_cuda_ops-savings-off
#               only where gpu-test_cuda_ops fails (and did not time out):
#               again with MP_CUDA_KEEP_FILTERS=0 MP_CUDA_BACKWARD_ADD=0,
#               whether the savings on the default path are the cause
#   bench-ours-bf16-ops, -fp32-ops, -bf16-act-ops
#               the steps again with BENCH_OPS=1 and MP_CUDA_PROFILE=1 (the
#               time per kind of operation, and per convolution shape, each
#               waited for)
#   bench-ours-eval-bf16-no-graph
#               evaluation op by op (MP_CUDA_GRAPH=0)
#   bench-ours-bf16-b256, bench-torch-eager-b256, bench-ours-bf16-act-b256
#               batch 256: whether a step is bound by the host
#   bench-ours-bf16-no-graph
#               the bf16 step op by op (MP_CUDA_GRAPH=0) instead of as one
#               CUDA graph: what the graph gains
#   bench-ours-bf16-no-ahead
#               each batch uploaded by its own step (BENCH_AHEAD=0) instead
#               of copied on the second stream while the step before runs
#   bench-ours-bf16-augment, -augment-ops
#               each batch made in the step from a plan (BENCH_AUGMENT=1),
#               as with mp-train --augment backend; and the augmentation's
#               share of the step, each operation waited for
#   gpu-test_cuda_ops-graph-api, bench-ours-bf16-graph-api(-ops)
#               the tests (not after a hang of the plain ones) and the bf16
#               step with the convolutions through cuDNN's graph API
#               (MP_CUDNN_API=graph)
#   bench-torch-compile-ro, bench-torch-eval-compile-ro
#               torch.compile(mode="reduce-overhead"): the compiled step
#               run as CUDA graphs, as ours is
#   profile-torch
#               a kernel-time profile of PyTorch's eager bf16 step
#   bench-ours-bf16-act-graph-api, bench-ours-bf16-act-timed
#               bf16 activations with the graph API's plans, and with
#               algorithms chosen by timing
#   bench-ours-bf16-savings-off
#               bf16 without the filters' bf16 copies and the residual's
#               sum made by the convolution: what they gain
#   bench-ours-bf16-heuristic, -timed, -timed-nondet, -legacy-stream
#               bf16 again with cuDNN's algorithms chosen by its
#               heuristics, by timing (MP_CUDNN_SEARCH=timed), and by
#               timing among nondeterministic ones too; then on the legacy
#               default stream (MP_CUDA_STREAM=legacy); each logs its
#               choices (MP_CUDNN_LOG=1)
#   gpu-programs
#               tests/cli/emucuda.bats with the real CUDA module instead of
#               the emulated one: mp-train and mp-eval --backend cuda on
#               tiny data, graphs against op by op and fp32 against the
#               CPU, resumes and a SIGTERM bit for bit (full build; bats
#               from build/device-deps when the machine has none)
# then RESULTS_DIR/summary.txt: each stage's status and time, images/s,
# the ratios ours / PyTorch, and MFU = 3 x forward FLOPs x images/s
# (1 x for evaluation) against 989 TFLOP/s (the H100/H200 SXM dense bf16
# datasheet figure).
#
# --quick leaves out torch.compile, the profile and the algorithm
# variants: for checking a change, not for the figures. Each stage's limit
# is cut to what is left of the time budget (DEVICE_CHECK_BUDGET, 450 s);
# stages that it no longer has room for, or that it cut short, are
# skipped, not failed, so the whole check ends within about the budget.
# SIGINT, SIGTERM or SIGHUP stop the stage that runs and the check, with
# the logs so far packed.
#
# Without a GPU (e.g. the CI machine) it still runs: the build goes as far
# as the toolchain allows, the GPU stages are SKIPPED with the reason, and
# --cpu-smoke runs both benchmarks on the CPU at a tiny size, to check the
# benchmark code paths only (those numbers mean nothing).
#
# The GPU machine lacks TurboJPEG, LMDB and cJSON, which the full build
# (the programs) needs: scripts/device-deps.sh copies them from this
# machine into build/device-deps; a device call that carries that folder
# gets the full build, else the minimal one.
#
# DEVICE_CHECK_FORCE_MIN=1 skips make for the minimal build, and
# DEVICE_CHECK_SHIMS=1 makes that use the stand-ins: to test the fallback.
#
# Exit status: 0 when no stage failed (skips are not failures), 1 otherwise,
# 2 on a usage error. The whole script keeps within about 8 minutes.
set -u

prog=device-check.sh
usage_args="[--cpu-smoke] [--quick] [--keep-logs] [RESULTS_DIR]"
# usage; and numbers with a decimal point in awk and printf, whatever the
# locale
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SMOKE=0
QUICK=0
KEEP_LOGS=0
RESULTS=
opts=1
for a in "$@"; do
	# after --, a RESULTS_DIR that starts with "-"
	if [ $opts = 0 ]; then
		[ -z "$RESULTS" ] || usage
		RESULTS=$a
		continue
	fi
	case $a in
	--) opts=0 ;;
	--cpu-smoke) SMOKE=1 ;;
	--quick) QUICK=1 ;;
	--keep-logs) KEEP_LOGS=1 ;;
	-h | --help)
		echo "usage: device-check.sh [--cpu-smoke] [--quick] [--keep-logs] [RESULTS_DIR]"
		echo "(RESULTS_DIR: default ./device-check-results; the stages, the options and the"
		echo "environment: the comment at the top of $0)"
		exit 0
		;;
	-*) usage "unknown option $a" ;;
	*) [ -z "$RESULTS" ] || usage; RESULTS=$a ;;
	esac
done
# nothing here reads a terminal: a step that would wait for one ends
exec </dev/null
RESULTS=${RESULTS:-./device-check-results}
[[ $RESULTS != -* ]] || RESULTS=./$RESULTS
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p -- "$RESULTS" || exit 1
RESULTS=$(cd -- "$RESULTS" && pwd)
cd "$ROOT" || exit 1

START=$(date +%s)
BUDGET=${DEVICE_CHECK_BUDGET:-450} # seconds for all stages: 7.5 minutes
PEAK_TFLOPS=989
# the python with torch: $PYTHON, python3 on PATH, then known places
PY=
for p in ${PYTHON:+"$PYTHON"} python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
	if command -v "$p" >/dev/null 2>&1 && timeout 60 "$p" -c 'import torch' >/dev/null 2>&1; then
		PY=$p
		break
	fi
done
PY=${PY:-${PYTHON:-python3}}
JOBS=$(nproc 2>/dev/null || echo 4)
SUMMARY=$RESULTS/summary.txt
# an earlier check's logs go (its marker says so); a logs/ of the user's
# in RESULTS_DIR stays, and the check does not run there
if [ -e "$RESULTS/logs" ] && [ ! -e "$RESULTS/logs/.device-check" ] &&
	[ -n "$(ls -A "$RESULTS/logs" 2>/dev/null)" ]; then
	echo "device-check: $RESULTS/logs: exists and holds no device check's logs; give another RESULTS_DIR" >&2
	exit 2
fi
rm -rf "$RESULTS/logs" "$RESULTS/logs.tar.gz" "$RESULTS/logs.tar.gz.tmp"
# Each stage's log, in a folder of its own outside RESULTS_DIR: a GPU
# machine's caller may take back only a few files from there, so
# RESULTS_DIR holds the logs packed, made again after every stage.
LOGS_PARENT=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX") || exit 1
trap 'rm -rf "$LOGS_PARENT"' EXIT
# A signal stops the stage that runs (timeout passes it on to the stage's
# commands), keeps what the stages logged, and ends the check with the
# signal's status.
STAGE_PID=
# shellcheck disable=SC2317 # run by the traps
stopped() { # SIGNAL STATUS
	trap - INT TERM HUP
	if [ -n "$STAGE_PID" ]; then
		kill -TERM "$STAGE_PID" 2>/dev/null
		wait "$STAGE_PID" 2>/dev/null
		echo "# STOPPED by SIG$1 after $(($(date +%s) - STAGE_T0))s" >>"$STAGE_LOG"
	fi
	echo "device-check: stopped by SIG$1" | tee -a "$RESULTS/device-check.log" >&2
	pack_logs
	exit "$2"
}
trap 'stopped INT 130' INT
trap 'stopped TERM 143' TERM
trap 'stopped HUP 129' HUP
LOGS=$LOGS_PARENT/logs
mkdir -p "$LOGS" || exit 1
: >"$LOGS/.device-check"
: >"$RESULTS/stages.tsv"
: >"$RESULTS/device-check.log" # this check's messages, not an earlier one's too
FAILED=0

say() { echo "device-check: $*" | tee -a "$RESULTS/device-check.log" >&2; }

# The time a stage may take: its own limit, cut to what is left of the
# budget (at least 5 seconds, so that a late stage still reports).
limit() {
	local want=$1 left=$((BUDGET - ($(date +%s) - START)))
	[ "$left" -lt 5 ] && left=5
	[ "$want" -lt "$left" ] && echo "$want" || echo "$left"
}

# the stage logs packed into RESULTS_DIR as they are now (a new file
# renamed over the old: a stop from outside leaves a whole one)
pack_logs() {
	tar czf "$RESULTS/logs.tar.gz.tmp" -C "$LOGS_PARENT" logs 2>/dev/null &&
		mv -f "$RESULTS/logs.tar.gz.tmp" "$RESULTS/logs.tar.gz"
}

# record STAGE STATUS SECONDS NOTE; once the time budget has stopped a
# stage (run), a stage that fails is a SKIP: it ran short of time, or
# after one that did
record() {
	local status=$2 note=$4
	if [ "$status" = FAIL ] && [ "$BUDGET_SPENT" = 1 ]; then
		status=SKIP
		note="the time budget (${BUDGET}s) is spent: $note"
	fi
	printf '%s\t%s\t%s\t%s\n' "$1" "$status" "$3" "$note" >>"$RESULTS/stages.tsv"
	say "$1: $status (${3}s) $note"
	[ "$status" = FAIL ] && FAILED=1
	pack_logs
	return 0
}

# optional SECONDS CMD STAGE ARGS...: CMD STAGE ARGS when that much of the
# budget is left, else STAGE is skipped with the reason (not failed)
optional() {
	local need=$1 left=$((BUDGET - ($(date +%s) - START)))
	shift
	if [ "$left" -ge "$need" ]; then
		"$@"
	else
		record "$2" SKIP 0 "${left}s of the time budget left, ${need}s needed"
	fi
}

# run STAGE LIMIT CMD...: runs CMD with a time limit, output to STAGE.log;
# returns its status (124 on a timeout) and sets ELAPSED. Under 10 seconds
# of the budget left, it runs nothing and returns 125: the whole check
# keeps within the budget and a few seconds more. Either that or a
# timeout at a limit the budget cut sets BUDGET_SPENT (see record).
BUDGET_SPENT=0
run() {
	local stage=$1 want=$2 lim t0 rc left=$((BUDGET - ($(date +%s) - START)))
	if [ "$left" -lt 10 ]; then
		echo "# skipped: ${left}s of the time budget left" >>"$LOGS/$stage.log"
		BUDGET_SPENT=1
		ELAPSED=0
		return 125
	fi
	lim=$(limit "$2")
	shift 2
	t0=$(date +%s)
	{
		echo "\$ $*"
		echo "# limit ${lim}s, started $(date -u +%FT%TZ)"
	} >>"$LOGS/$stage.log"
	# in the background, waited for: a signal to the script (a caller's
	# timeout, Ctrl-C) runs its trap at once, which stops the stage;
	# timeout's own process group would not get it
	STAGE_LOG=$LOGS/$stage.log STAGE_T0=$t0
	timeout -k 5 "$lim" "$@" >>"$LOGS/$stage.log" 2>&1 &
	STAGE_PID=$!
	wait "$STAGE_PID"
	rc=$?
	STAGE_PID=
	ELAPSED=$(($(date +%s) - t0))
	[ "$rc" -eq 124 ] && echo "# TIMED OUT after ${lim}s" >>"$LOGS/$stage.log"
	[ "$rc" -eq 124 ] && [ "$lim" -lt "$want" ] && BUDGET_SPENT=1
	echo "# exit status $rc" >>"$LOGS/$stage.log"
	return "$rc"
}

# ---- env ----------------------------------------------------------------
GPU=0
GPU_WHY="nvidia-smi not found"
{
	echo "date: $(date -u +%FT%TZ)"
	echo "host: $(uname -a)"
	echo "git: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)"
} >"$LOGS/env.log"
if command -v nvidia-smi >/dev/null 2>&1; then
	if run env 20 nvidia-smi; then
		if timeout 20 nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
			GPU=1
			GPU_WHY=$(timeout 20 nvidia-smi -L | head -1)
		else
			GPU_WHY="nvidia-smi lists no GPU"
		fi
	else
		GPU_WHY="nvidia-smi failed (no driver?)"
	fi
fi
run env 60 "$PY" -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
TORCH_OK=$?
case $TORCH_OK in
0) TORCH_WHY=found ;;
125) TORCH_WHY="not tried (no time left in the budget)" ;;
*) TORCH_WHY="NOT importable" ;;
esac
record env "$([ $GPU = 1 ] && echo ok || echo SKIP)" 0 "$GPU_WHY; torch $TORCH_WHY"

# ---- discover -------------------------------------------------------------
# nvcc: PATH, /usr/local/cuda, then the pip package nvidia-cuda-nvcc.
SITES=$("$PY" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() + [site.getusersitepackages()] + sys.path if p.endswith("-packages")))' 2>/dev/null | sort -u)
find_in_sites() { # NAME: the first file called NAME under SITES' nvidia/ dirs
	local s f
	while IFS= read -r s; do # one path a line: a path may hold blanks
		{ [ -n "$s" ] && [ -d "$s/nvidia" ]; } || continue
		f=$(find "$s/nvidia" -name "$1" 2>/dev/null | sort | head -1)
		[ -n "$f" ] && { echo "$f"; return 0; }
	done <<<"$SITES"
	return 1
}
NVCC=$(command -v nvcc 2>/dev/null || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
[ -z "$NVCC" ] && NVCC=$(find_in_sites nvcc || true)
CUDA_HOME_FOUND=${CUDA_HOME:-}
[ -z "$CUDA_HOME_FOUND" ] && [ -n "$NVCC" ] && CUDA_HOME_FOUND=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
# a header's dir and a library's dir: CUDA_HOME's, else the pip package's
LIBLINKS=$ROOT/build/device-libs
find_inc() { # HEADER
	if [ -f "$CUDA_HOME_FOUND/include/$1" ]; then echo "$CUDA_HOME_FOUND/include"; return 0; fi
	local f
	f=$(find_in_sites "$1") && dirname "$f"
}
find_lib() { # NAME (libcudnn): a dir with NAME.so; pip ships NAME.so.N only,
	# so link NAME.so to it in build/device-libs
	local d f
	for d in "$CUDA_HOME_FOUND/lib64" "$CUDA_HOME_FOUND/lib"; do
		[ -e "$d/$1.so" ] && { echo "$d"; return 0; }
	done
	f=$(find_in_sites "$1.so*") || return 1
	mkdir -p "$LIBLINKS"
	# the versioned name too (libcudnn.so.9), which the programs load:
	# the rpath into this folder then finds it without LD_LIBRARY_PATH
	ln -sf "$f" "$LIBLINKS/$1.so"
	ln -sf "$f" "$LIBLINKS/$(basename "$f")"
	echo "$LIBLINKS"
}
# cudart's static library: CUDA_HOME's lib64 or lib (a pip nvcc's
# CUDA_HOME has lib/ only), else the pip package's
CUDART_LIB=
for d in "$CUDA_HOME_FOUND/lib64" "$CUDA_HOME_FOUND/lib"; do
	[ -n "$CUDA_HOME_FOUND" ] && [ -f "$d/libcudart_static.a" ] && { CUDART_LIB=$d; break; }
done
if [ -z "$CUDART_LIB" ] && f=$(find_in_sites libcudart_static.a); then
	CUDART_LIB=$(dirname "$f")
fi
CUDNN_INC=$(find_inc cudnn.h || true)
CUDNN_LIB=$(find_lib libcudnn || true)
CUBLAS_INC=$(find_inc cublas_v2.h || true)
CUBLAS_LIB=$(find_lib libcublas || true)
# pip's libcudnn.so.9 loads its engine libraries from its own dir, and
# libcublas.so needs libcublasLt: put the real dirs on the loader's path
# (PyTorch runs with the LD_LIBRARY_PATH it was given: its own cuDNN, not
# one that these dirs would put first)
TORCH_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
for name in libcudnn libcublas libcublasLt; do
	for d in "$CUDNN_LIB" "$CUBLAS_LIB"; do
		{ [ -n "$d" ] && [ -e "$d/$name.so" ]; } || continue
		f=$(readlink -f "$d/$name.so")
		LD_LIBRARY_PATH=$(dirname "$f")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
		break
	done
done
[ -n "$(find_in_sites 'libcublasLt.so*' || true)" ] && [ ! -e "$CUBLAS_LIB/libcublasLt.so" ] &&
	LD_LIBRARY_PATH=$(dirname "$(find_in_sites 'libcublasLt.so*')")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# the full build's libraries that the GPU machine lacks, when
# scripts/device-deps.sh put them in build/device-deps here and the device
# call carried that folder
DEPS=$ROOT/build/device-deps
if [ -d "$DEPS/lib/pkgconfig" ]; then
	export PKG_CONFIG_PATH=$DEPS/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
	LD_LIBRARY_PATH=$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
{
	echo "nvcc:       ${NVCC:-NOT FOUND}"
	[ -n "$NVCC" ] && "$NVCC" --version
	echo "CUDA_HOME:  ${CUDA_HOME_FOUND:-NOT FOUND}"
	echo "cudart_static: ${CUDART_LIB:-NOT FOUND}"
	echo "CUDNN_INC:  ${CUDNN_INC:-NOT FOUND}"
	echo "CUDNN_LIB:  ${CUDNN_LIB:-NOT FOUND}"
	echo "CUBLAS_INC: ${CUBLAS_INC:-NOT FOUND}"
	echo "CUBLAS_LIB: ${CUBLAS_LIB:-NOT FOUND}"
	echo "LD_LIBRARY_PATH: $LD_LIBRARY_PATH"
	echo "device-deps: $([ -d "$DEPS/lib/pkgconfig" ] && echo "$DEPS" || echo 'none (scripts/device-deps.sh, then carry build/device-deps)')"
	echo "site-packages: $SITES"
} >"$LOGS/discover.log" 2>&1
if [ -n "$NVCC" ] && [ -n "$CUDNN_INC" ] && [ -n "$CUDNN_LIB" ] && [ -n "$CUBLAS_LIB" ] &&
	[ -n "$CUDART_LIB" ]; then
	record discover ok 0 "nvcc $NVCC; cuDNN $CUDNN_INC"
	HAVE_TOOLS=1
else
	record discover FAIL 0 "missing: $([ -z "$NVCC" ] && echo 'nvcc ')$([ -z "$CUDNN_INC" ] && echo 'cudnn.h ')$([ -z "$CUDNN_LIB" ] && echo 'libcudnn ')$([ -z "$CUBLAS_LIB" ] && echo 'libcublas ')$([ -z "$CUDART_LIB" ] && echo 'libcudart_static.a')"
	HAVE_TOOLS=0
fi

# ---- build ------------------------------------------------------------------
BIN=$ROOT/build
MAKEVARS=(CUDA=1 CUDA_ARCH=sm_90 "NVCC=$NVCC" "CUDA_HOME=$CUDA_HOME_FOUND" "CUDART_LIB=$CUDART_LIB" "CUDNN_INC=$CUDNN_INC"
	"CUDNN_LIB=$CUDNN_LIB" "CUBLAS_INC=${CUBLAS_INC:-$CUDA_HOME_FOUND/include}" "CUBLAS_LIB=$CUBLAS_LIB")

# The sources the GPU stages need, built without the Debian libraries of the
# full build: the CPU reference, the CUDA backend, the network, tests/gpu.
# shellcheck disable=SC2317 # run by bash -c "$(declare -f build_min); build_min"
build_min() {
	local out=$ROOT/build/min shim=$ROOT/build/min/shim f o objs=() zlib=(-lz) blas=(-lopenblas)
	mkdir -p "$out/obj" "$out/tests/gpu" "$shim"
	if [ -n "${DEVICE_CHECK_SHIMS:-}" ] || ! echo '#include <zlib.h>' | gcc -E -x c - >/dev/null 2>&1; then
		zlib=()
		echo "# no zlib.h: a bitwise crc32 stands in"
		cat >"$shim/zlib.h" <<'EOF'
/* device-check.sh's stand-in: zlib's crc32 only (CRC-32, IEEE). */
typedef unsigned char Bytef;
typedef unsigned long uLong;
typedef unsigned int uInt;
static inline uLong crc32(uLong crc, const Bytef *p, uInt n)
{
	unsigned long c = crc ^ 0xffffffffUL;
	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0xedb88320UL : c >> 1;
	}
	return c ^ 0xffffffffUL;
}
EOF
	fi
	if [ -n "${DEVICE_CHECK_SHIMS:-}" ] || ! echo '#include <cblas.h>' | gcc -E -x c - >/dev/null 2>&1 || ! echo 'int main(void){return 0;}' | gcc -x c - -lopenblas -o /dev/null >/dev/null 2>&1; then
		echo "# no OpenBLAS: a plain-loop sgemm stands in (the fast CPU backend is slow; tests compare against cpu-ref)"
		blas=()
		cat >"$shim/cblas.h" <<'EOF'
/* device-check.sh's stand-in: the row-major sgemm conv_gemm.c uses. */
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };
static inline void cblas_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta,
			       enum CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
			       const float *a, int lda, const float *b, int ldb, float beta,
			       float *c, int ldc)
{
	(void)o;
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			float s = 0;
			for (int p = 0; p < k; p++)
				s += (ta == CblasNoTrans ? a[i * lda + p] : a[p * lda + i]) *
				     (tb == CblasNoTrans ? b[p * ldb + j] : b[j * ldb + p]);
			c[i * ldc + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * ldc + j]);
		}
}
static inline char *openblas_get_corename(void) { return (char *)"stand-in"; }
static inline void openblas_set_num_threads(int n) { (void)n; }
EOF
	fi
	local cflags=(-std=c11 -O2 -Wall -D_GNU_SOURCE -pthread -fopenmp -DMP_HAVE_CUDA -I"$shim" -Icommon -Ikernels)
	# every object at once (nvcc is the slow part), then the links; the
	# CUDA backend linked in directly (no module: see kernels/cuda/module.h)
	local pids=() bad=0 p
	for f in common/mp_util.c common/mp_resnet.c common/mp_backends.c kernels/cpu/*.c; do
		[[ $f == */device_none.c ]] && continue
		o=$out/obj/$(basename "$f" .c).o
		gcc "${cflags[@]}" -c "$f" -o "$o" &
		pids+=($!)
		objs+=("$o")
	done
	for f in kernels/cuda/*.cu; do
		o=$out/obj/$(basename "$f" .cu).cu.o
		"$NVCC" -O2 -arch=sm_90 -DMP_CUDA_ARCH=\"sm_90\" -Ikernels -I"$CUDNN_INC" -I"${CUBLAS_INC:-$CUDA_HOME_FOUND/include}" -c "$f" -o "$o" &
		pids+=($!)
		objs+=("$o")
	done
	for p in "${pids[@]}"; do
		wait "$p" || bad=1
	done
	[ "$bad" = 0 ] || return 1
	for f in tests/gpu/*.c; do
		gcc "${cflags[@]}" -o "$out/tests/gpu/$(basename "$f" .c)" "$f" "${objs[@]}" "${blas[@]}" "${zlib[@]}" \
			-L"$CUDNN_LIB" -L"$CUBLAS_LIB" -L"$CUDART_LIB" -lcudnn -lcublas \
			-lcudart_static -ldl -lrt -lstdc++ -lm -Wl,-rpath,"$CUDNN_LIB" \
			-Wl,-rpath,"$CUBLAS_LIB" || return 1
	done
}

BUILT=none
GPU_TARGETS=()
for f in tests/gpu/*.c; do
	GPU_TARGETS+=("build/tests/gpu/$(basename "$f" .c)")
done
if [ "$HAVE_TOOLS" = 1 ]; then
	# the programs and the GPU ones (not the cmocka unit tests: make test's business)
	# DEVICE_CHECK_FORCE_MIN=1 (and DEVICE_CHECK_SHIMS=1) test the fallback
	if [ -z "${DEVICE_CHECK_FORCE_MIN:-}" ] &&
		run build 240 make -j"$JOBS" "${MAKEVARS[@]}" all "${GPU_TARGETS[@]}"; then
		BUILT=full
		record build ok "$ELAPSED" "make CUDA=1 CUDA_ARCH=sm_90"
	else
		grep -qs 'missing libraries' "$LOGS/build.log" &&
			say "build: the full build lacks Debian libraries (see build.log)"
		say "build: the full build failed; building the GPU stages' part alone (build/min/)"
		export ROOT NVCC CUDNN_INC CUDNN_LIB CUBLAS_INC CUBLAS_LIB CUDA_HOME_FOUND CUDART_LIB DEVICE_CHECK_SHIMS
		if run build-min 200 bash -c "$(declare -f build_min); build_min"; then
			BUILT=min
			BIN=$ROOT/build/min
			if [ -n "${DEVICE_CHECK_FORCE_MIN:-}" ]; then
				record build SKIP "$ELAPSED" "DEVICE_CHECK_FORCE_MIN: no make; the minimal build worked (build-min.log)"
			else
				record build FAIL "$ELAPSED" "make failed (see build.log); the minimal build worked (build-min.log)"
			fi
		else
			record build FAIL "$ELAPSED" "make failed (build.log), the minimal build too (build-min.log)"
		fi
	fi
else
	record build FAIL 0 "nothing to build with (see discover.log)"
fi

# ---- version ------------------------------------------------------------------
if [ "$BUILT" = full ]; then
	if run version 15 build/bin/mp-train --version; then
		record version ok "$ELAPSED" "$(grep -v '^[#$]' "$LOGS/version.log" | tr '\n' ' ')"
	else
		record version FAIL "$ELAPSED" "see version.log"
	fi
else
	record version SKIP 0 "no full build"
fi

# ---- gpu-tests ----------------------------------------------------------------
# test_cuda_ops takes well under a minute on an H200; 90 s bounds a hang
TESTS_TIMED_OUT=0
if [ "$BUILT" = none ]; then
	record gpu-tests FAIL 0 "not built"
else
	for t in "$BIN"/tests/gpu/test_*; do
		[ -x "$t" ] || continue
		name=$(basename "$t")
		log=$LOGS/gpu-$name.log
		# cuDNN's own reasons for a failed call go into the log
		if run "gpu-$name" 90 env CUDNN_LOGLEVEL_DBG=1 CUDNN_LOGDEST_DBG=stderr "$t"; then
			if grep -q '^1\.\.0 # SKIP' "$log"; then
				record "gpu-$name" SKIP "$ELAPSED" "$(grep -m1 '^1\.\.0 # SKIP' "$log" | sed 's/^1\.\.0 # SKIP //')"
			else
				record "gpu-$name" ok "$ELAPSED" "$(grep -m1 '^# [0-9]* of [0-9]* failed' "$log")"
			fi
		else
			rc=$?
			# a hang would hang again: the test's reruns below are left out
			[ "$rc" = 124 ] && TESTS_TIMED_OUT=1
			record "gpu-$name" FAIL "$ELAPSED" "$(grep -c '^not ok' "$log") not ok$([ "$rc" = 124 ] && echo ', timed out'); see gpu-$name.log"
		fi
	done
fi

# where the operations' tests fail: again without the two savings on the
# default path (the filters' bf16 copies, the residual's sum made by the
# convolution), to tell whether those are the cause
# shellcheck disable=SC2317 # run by optional
savings_off_tests() { # STAGE
	local log=$LOGS/$1.log
	if run "$1" 90 env MP_CUDA_KEEP_FILTERS=0 MP_CUDA_BACKWARD_ADD=0 \
		"$BIN/tests/gpu/test_cuda_ops"; then
		record "$1" ok "$ELAPSED" "MP_CUDA_KEEP_FILTERS=0 MP_CUDA_BACKWARD_ADD=0 pass: $(grep -m1 '^# [0-9]* of [0-9]* failed' "$log")"
	else
		record "$1" FAIL "$ELAPSED" "fails without them too: $(grep -c '^not ok' "$log") not ok; see $(basename "$log")"
	fi
}

# the CUDA tests again with the convolutions through cuDNN's graph API
# shellcheck disable=SC2317 # run by optional
graph_api_tests() { # STAGE
	local log=$LOGS/$1.log
	# errors and warnings: a descriptor cuDNN refuses says which attribute
	if run "$1" 90 env MP_CUDNN_API=graph CUDNN_LOGLEVEL_DBG=2 \
		CUDNN_LOGDEST_DBG=stderr "$BIN/tests/gpu/test_cuda_ops"; then
		if grep -q '^1\.\.0 # SKIP' "$log"; then
			record "$1" SKIP "$ELAPSED" "$(grep -m1 '^1\.\.0 # SKIP' "$log" | sed 's/^1\.\.0 # SKIP //')"
			return
		fi
		record "$1" ok "$ELAPSED" "MP_CUDNN_API=graph: $(grep -m1 '^# [0-9]* of [0-9]* failed' "$log")"
	else
		record "$1" FAIL "$ELAPSED" "MP_CUDNN_API=graph: $(grep -c '^not ok' "$log") not ok; see $(basename "$log")"
	fi
}

# ---- benchmarks ------------------------------------------------------------------
# ours: bench_step's line is backend, batch, size, images/s, s/step,
# forward GFLOP/image, training TFLOP/s, precision. Each precision twice:
# plainly (the figure), then, later, with BENCH_OPS=1 (the time per
# operation, each waited for: where the time goes, in
# bench-ours-*-ops.log).
declare -A OURS
ours_bench() { # PRECISION BACKEND BATCH STEPS SIZE WARMUP [SMOKE-NOTE]
	local prec=$1 stage=bench-ours-$1 line
	if run "$stage" 60 "$BIN/tests/gpu/bench_step" "$2" "$3" "$4" "$5" "$6" "$prec"; then
		line=$(awk -F'\t' -v b="$2" '$1 == b' "$LOGS/$stage.log" | tail -1)
		OURS[$prec]=$line
		record "$stage" ok "$ELAPSED" "${7:-}$(echo "$line" | cut -f4) images/s; $(graph_use "$LOGS/$stage.log")"
	else
		record "$stage" FAIL "$ELAPSED" "see $stage.log"
	fi
}
ours_ops() { # PRECISION BACKEND BATCH SIZE [ENV...]: the time per operation
	local prec=$1 backend=$2 batch=$3 size=$4 stage=bench-ours-$1-ops
	shift 4
	run "$stage" 60 env "$@" BENCH_OPS=1 MP_CUDA_PROFILE=1 "$BIN/tests/gpu/bench_step" \
		"$backend" "$batch" 5 "$size" 1 "$prec" || say "$stage: failed (see $stage.log)"
}
# how many steps ran as one CUDA graph (bench_step's line on stderr)
graph_use() { # LOG
	local l
	l=$(grep -m1 'recorded as a graph' "$1" | sed -E 's/.*graph ([0-9]+) time\(s\), launched as one ([0-9]+) time\(s\).*/graph: recorded \1, launched \2/')
	echo "${l:-graph: -}"
}
# the convolution algorithms' choice (kernels/cuda/conv.cu): what cuDNN's
# heuristics chose (logged), and the step with timed choices, deterministic
# and not
ours_variant() { # STAGE ENV...
	local stage=$1 line
	shift
	if run "$stage" 60 env "$@" MP_CUDNN_LOG=1 "$BIN/tests/gpu/bench_step" cuda 128 20 112 3 bf16; then
		line=$(awk -F'\t' '$1 == "cuda"' "$LOGS/$stage.log" | tail -1)
		record "$stage" ok "$ELAPSED" "$* : $(echo "$line" | cut -f4) images/s; $(graph_use "$LOGS/$stage.log")"
	else
		record "$stage" FAIL "$ELAPSED" "see $stage.log"
	fi
}
# evaluation: the inference forward pass and the logits' download, as
# mp-eval's (BN folded into the convolutions, no activations kept)
ours_eval() { # PRECISION BACKEND BATCH STEPS SIZE WARMUP [SMOKE-NOTE]
	local stage=bench-ours-eval-$1 line
	if run "$stage" 60 "$BIN/tests/gpu/bench_step" "$2" "$3" "$4" "$5" "$6" "$1" eval; then
		line=$(awk -F'\t' -v b="$2" '$1 == b' "$LOGS/$stage.log" | tail -1)
		OURS[eval-$1]=$line
		record "$stage" ok "$ELAPSED" "${7:-}$(echo "$line" | cut -f4) images/s; $(graph_use "$LOGS/$stage.log")"
	else
		record "$stage" FAIL "$ELAPSED" "see $stage.log"
	fi
}
# bf16 with the activations stored in bf16 NHWC (MP_CUDA_ACTIVATIONS=bf16)
ours_act() { # STAGE MODE BATCH
	local stage=$1 line
	if run "$stage" 60 env MP_CUDA_ACTIVATIONS=bf16 "$BIN/tests/gpu/bench_step" cuda "$3" 50 112 3 bf16 "$2"; then
		line=$(awk -F'\t' '$1 == "cuda"' "$LOGS/$stage.log" | tail -1)
		OURS[$stage]=$line
		record "$stage" ok "$ELAPSED" "MP_CUDA_ACTIVATIONS=bf16, $2, batch $3: $(echo "$line" | cut -f4) images/s; $(graph_use "$LOGS/$stage.log")"
	else
		record "$stage" FAIL "$ELAPSED" "see $stage.log"
	fi
}
# a bench_step run whose figure only the summary's ratios use
ours_plain() { # STAGE NOTE ENV-AND-ARGS...
	local stage=$1 note=$2
	shift 2
	if run "$stage" 60 env "$@"; then
		record "$stage" ok "$ELAPSED" "$note: $(awk -F'\t' '$1 == "cuda"' "$LOGS/$stage.log" | tail -1 | cut -f4) images/s"
	else
		record "$stage" FAIL "$ELAPSED" "see $stage.log"
	fi
}

# ---- the programs on the GPU ------------------------------------------------------------
# mp-batchwriter, mp-train and mp-eval themselves (full build only): 4096
# synthetic JPEGs of 16 classes, two epochs of the reference recipe on the
# GPU with the loader's JPEG decoding and augmentation included, then
# evaluation; the lines with images/s go to the summary.
E2E=
# shellcheck disable=SC2317 # run by bash -c e2e (export -f)
e2e() {
	set -e
	"$PY" scripts/gen-bench-images.py "$work/img" 4096 --classes 16 -j "$JOBS"
	build/bin/mp-batchwriter -q -r "$work/img" -c "$work/img/categories.txt" \
		-o "$work/train.db" "$work/img/train.txt"
	# the loader alone, with mp-train's threads: the rate it can feed
	build/scripts/loader-rate -t "$((JOBS > 2 ? JOBS - 2 : 1))" -n 40 "$work/train.db"
	build/bin/mp-train -d "$work/train.db" -v "$work/train.db" -o "$work/out" \
		--backend cuda --epochs 2 --loader-threads "$((JOBS > 2 ? JOBS - 2 : 1))"
	build/bin/mp-eval -m "$work/out/weights.safetensors" --backend cuda "$work/train.db"
	# the batches made on the device from the set kept decoded there:
	# the same weights, bit for bit, and the rate without the loader
	build/bin/mp-train -d "$work/train.db" -v "$work/train.db" -o "$work/out-aug" \
		--backend cuda --epochs 2 --loader-threads "$((JOBS > 2 ? JOBS - 2 : 1))" \
		--augment backend
	build/bin/mp-inspect --diff "$work/out/weights.safetensors" \
		"$work/out-aug/weights.safetensors" >"$work/diff.txt" || { cat "$work/diff.txt"; exit 1; }
	tail -1 "$work/diff.txt"
	# again with the activations stored in bf16: one epoch, then a
	# multiscale evaluation (views of four sizes in the same buffers)
	MP_CUDA_ACTIVATIONS=bf16 build/bin/mp-train -d "$work/train.db" -v "$work/train.db" \
		-o "$work/out-act" --backend cuda --epochs 1 \
		--loader-threads "$((JOBS > 2 ? JOBS - 2 : 1))"
	MP_CUDA_ACTIVATIONS=bf16 build/bin/mp-eval -m "$work/out-act/weights.safetensors" \
		--backend cuda --multiscale "$work/train.db"
}
export -f e2e
export PY JOBS
# shellcheck disable=SC2317 # run by optional
train_gpu() { # STAGE
	work=$(mktemp -d)
	export work
	if run "$1" 150 bash -c e2e; then
		E2E=$(grep -E 'images/s|as one graph|activations in bf16|decoded into|SAME|DIFFERENT' "$LOGS/$1.log" | tail -16 | tr '\n' ' ')
		record "$1" ok "$ELAPSED" "mp-train and mp-eval --backend cuda ran; $(grep -m1 -o '[0-9]* of this run.s [0-9]* steps ran as one graph' "$LOGS/$1.log" || echo 'no step ran as a graph')"
	else
		record "$1" FAIL "$ELAPSED" "see $1.log"
	fi
	rm -rf "$work"
}

# PyTorch: the same network and batch, bf16 autocast, channels_last; images
# copied from host memory every step as ours are.
cat >"$LOGS/torch_bench.py" <<'EOF'
import argparse, json, os, sys, time
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.join(sys.argv[1], "scripts"))
import mp_resnet

p = argparse.ArgumentParser()
p.add_argument("root")
p.add_argument("--device", default="cuda")
p.add_argument("--batch", type=int, default=128)
p.add_argument("--size", type=int, default=112)
p.add_argument("--steps", type=int, default=50)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--compile", action="store_true")
p.add_argument("--mode", default=None,
               help="torch.compile's mode: reduce-overhead runs the compiled step as CUDA graphs")
p.add_argument("--fp32", action="store_true", help="plain fp32 (no autocast, no TF32), as ours")
p.add_argument("--cudnn-benchmark", action="store_true",
               help="torch.backends.cudnn.benchmark: cuDNN's algorithms chosen by timing")
p.add_argument("--profile", action="store_true", help="print the GPU time per kernel")
p.add_argument("--eval", action="store_true",
               help="inference: eval mode, no gradients, the logits copied to the host every step")
a = p.parse_args()
if a.fp32:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.benchmark = a.cudnn_benchmark
dev = torch.device(a.device)
torch.manual_seed(0)
net = mp_resnet.ResNet().to(dev).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
model = net
if a.compile:
    if not hasattr(torch, "compile"):
        print("SKIP torch.compile is not in torch %s" % torch.__version__)
        sys.exit(3)
    model = torch.compile(net, mode=a.mode)
x_host = torch.randn(a.batch, 3, a.size, a.size) * 60
if dev.type == "cuda":
    x_host = x_host.pin_memory()
y = torch.randint(0, 100, (a.batch,), device=dev)

if a.eval:
    net.eval()

# Training on a GPU copies the next batch on a stream of its own while a
# step runs, as ours does (BENCH_AHEAD): the copy off the step's stream.
ahead = dev.type == "cuda" and not a.eval
if ahead:
    copy_stream = torch.cuda.Stream()
    hosts = [x_host, x_host.clone().pin_memory()]
    fetched = [0, None]  # batches fetched, the next one on the device

def fetch():
    h = hosts[fetched[0] % 2]
    fetched[0] += 1
    with torch.cuda.stream(copy_stream):
        return h.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)

def next_input():
    if not ahead:
        return x_host.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
    if fetched[1] is None:
        fetched[1] = fetch()
    torch.cuda.current_stream().wait_stream(copy_stream)
    x = fetched[1]
    x.record_stream(torch.cuda.current_stream())  # not reused before the step is done
    fetched[1] = fetch()
    return x

def step():
    x = next_input()
    if a.eval: # as mp-eval: the logits go to the host for the top-5
        with torch.inference_mode(), \
             torch.autocast(dev.type, dtype=torch.bfloat16, enabled=not a.fp32):
            logits = model(x)
        logits.float().cpu()
        return
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=not a.fp32):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()

t = time.time()
for _ in range(a.warmup):
    step()
sync()
warm = time.time() - t
t = time.time()
for _ in range(a.steps):
    step()
sync()
dt = (time.time() - t) / a.steps
if a.profile:
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        sync()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
print(json.dumps({"torch": torch.__version__, "device": a.device, "compile": a.compile,
                  "compile_mode": a.mode, "cudnn_benchmark": a.cudnn_benchmark,
                  "copy_ahead": ahead,
                  "mode": "eval" if a.eval else "train",
                  "batch": a.batch, "size": a.size, "warmup_s": round(warm, 2),
                  "images_per_s": a.batch / dt, "s_per_step": dt}))
EOF
declare -A TORCH
torch_bench() { # STAGE LIMIT ARGS...
	local stage=$1 lim=$2 rc
	shift 2
	run "$stage" "$lim" env LD_LIBRARY_PATH="$TORCH_LD_LIBRARY_PATH" PYTHONUNBUFFERED=1 \
		"$PY" "$LOGS/torch_bench.py" "$ROOT" "$@"
	rc=$?
	if [ $rc = 0 ]; then
		TORCH[$stage]=$("$PY" -c 'import json,sys; print("%.1f" % json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])["images_per_s"])' "$LOGS/$stage.log")
		record "$stage" ok "$ELAPSED" "${TORCH[$stage]} images/s$([ "$GPU" = 1 ] || echo ' (CPU SMOKE: code path only)')"
	elif [ $rc = 3 ]; then
		record "$stage" SKIP "$ELAPSED" "$(grep -m1 '^SKIP' "$LOGS/$stage.log" | sed 's/^SKIP //')"
	else
		record "$stage" FAIL "$ELAPSED" "see $stage.log"
	fi
}
# ---- the order: the figures first ---------------------------------------------------
# what the budget may not reach comes last: the figures (ours and
# PyTorch's, training and evaluation; torch.compile, PyTorch's best, among
# them), our likeliest best setting, the programs end to end, then the
# diagnostics and variants
torch_figures() { # the figures' PyTorch runs, on the GPU
	torch_bench bench-torch-eager 60 --device cuda
	torch_bench bench-torch-fp32 60 --device cuda --fp32
	torch_bench bench-torch-eval-eager 60 --device cuda --eval
	# cuDNN's algorithms chosen by timing, as fixed shapes allow
	torch_bench bench-torch-eager-cudnn-benchmark 60 --device cuda --cudnn-benchmark
	if [ "$QUICK" = 0 ]; then
		# the compiled step run as CUDA graphs (and timed algorithms):
		# PyTorch's answer to the host's launch cost, as our graphs are
		# ours, likely its fastest
		optional 100 torch_bench bench-torch-compile-ro 180 --device cuda --compile \
			--mode reduce-overhead --warmup 5 --cudnn-benchmark
		optional 100 torch_bench bench-torch-compile 150 --device cuda --compile
		optional 100 torch_bench bench-torch-eval-compile 150 --device cuda --eval --compile
	fi
}
if [ "$TORCH_OK" != 0 ]; then
	record bench-torch SKIP 0 "torch $TORCH_WHY"
elif [ "$GPU" != 1 ] && [ "$SMOKE" != 1 ]; then
	record bench-torch SKIP 0 "no GPU ($GPU_WHY); --cpu-smoke runs it on the CPU"
fi
if [ "$GPU" = 1 ] && [ "$BUILT" != none ]; then
	ours_bench bf16 cuda 128 50 112 3
	ours_bench fp32 cuda 128 50 112 3
	ours_eval bf16 cuda 128 50 112 3
	ours_eval fp32 cuda 128 50 112 3
	[ "$TORCH_OK" = 0 ] && torch_figures
	ours_act bench-ours-bf16-act train 128
	ours_act bench-ours-eval-bf16-act eval 128
elif [ "$GPU" = 1 ]; then
	record bench-ours SKIP 0 "not built"
	[ "$TORCH_OK" = 0 ] && torch_figures
elif [ "$SMOKE" = 1 ] && [ "$BUILT" != none ]; then
	ours_bench fp32 cpu 4 1 32 1 "CPU SMOKE (code path only): "
	ours_ops fp32 cpu 4 32
	ours_eval fp32 cpu 4 1 32 1 "CPU SMOKE (code path only): "
	if run bench-ours-fp32-augment 60 env BENCH_AUGMENT=1 "$BIN/tests/gpu/bench_step" cpu 4 1 32 1 fp32; then
		record bench-ours-fp32-augment ok "$ELAPSED" "CPU SMOKE (code path only): $(awk -F'\t' '$1 == "cpu" { print $4 }' "$LOGS/bench-ours-fp32-augment.log" | tail -1) images/s"
	else
		record bench-ours-fp32-augment FAIL "$ELAPSED" "see bench-ours-fp32-augment.log"
	fi
else
	record bench-ours SKIP 0 "no GPU ($GPU_WHY)"
fi
if [ "$GPU" != 1 ] && [ "$SMOKE" = 1 ] && [ "$TORCH_OK" = 0 ]; then
	torch_bench bench-torch-eager 60 --device cpu --batch 4 --size 32 --steps 1 --warmup 1
	torch_bench bench-torch-eval-eager 60 --device cpu --batch 4 --size 32 --steps 1 --warmup 1 --eval
	[ "$QUICK" = 1 ] ||
		optional 120 torch_bench bench-torch-compile 120 --device cpu --batch 4 --size 32 --steps 1 \
			--warmup 1 --compile
fi

# the programs end to end
if [ "$BUILT" = full ] && [ "$GPU" = 1 ]; then
	optional 60 train_gpu train-gpu
else
	record train-gpu SKIP 0 "needs the full build (scripts/device-deps.sh) and a GPU"
fi

# what explains the figures
if [ "$GPU" = 1 ] && [ "$BUILT" != none ]; then
	if grep -q $'^gpu-test_cuda_ops\tFAIL' "$RESULTS/stages.tsv" && [ "$TESTS_TIMED_OUT" = 0 ]; then
		optional 30 savings_off_tests gpu-test_cuda_ops-savings-off
	fi
	ours_ops bf16 cuda 128 112
	ours_ops fp32 cuda 128 112
	run bench-ours-bf16-act-ops 60 env MP_CUDA_ACTIVATIONS=bf16 BENCH_OPS=1 MP_CUDA_PROFILE=1 \
		"$BIN/tests/gpu/bench_step" cuda 128 5 112 1 bf16 || say "bench-ours-bf16-act-ops: failed"
	ours_plain bench-ours-eval-bf16-no-graph "MP_CUDA_GRAPH=0" MP_CUDA_GRAPH=0 \
		"$BIN/tests/gpu/bench_step" cuda 128 20 112 3 bf16 eval
	# batch 256: a step bound by the host's launches gains per image, one
	# bound by the GPU does not
	ours_plain bench-ours-bf16-b256 "batch 256" "$BIN/tests/gpu/bench_step" cuda 256 10 112 2 bf16
	[ "$TORCH_OK" = 0 ] && torch_bench bench-torch-eager-b256 60 --device cuda --batch 256 --steps 10
	ours_act bench-ours-bf16-act-b256 train 256
	# the step op by op, as before it was recorded as a CUDA graph
	ours_variant bench-ours-bf16-no-graph MP_CUDA_GRAPH=0
	# each batch uploaded in its own step, as before the copy ran ahead
	ours_variant bench-ours-bf16-no-ahead BENCH_AHEAD=0
	# each batch made in the step from a plan, as with mp-train
	# --augment backend, and what the augmentation's kernel costs there
	ours_variant bench-ours-bf16-augment BENCH_AUGMENT=1
	run bench-ours-bf16-augment-ops 60 env BENCH_AUGMENT=1 BENCH_OPS=1 \
		"$BIN/tests/gpu/bench_step" cuda 128 5 112 1 bf16 || say "bench-ours-bf16-augment-ops: failed"
	# the convolutions through cuDNN's graph API: its tests (not after a
	# hang of the plain ones), then its step
	if [ -x "$BIN/tests/gpu/test_cuda_ops" ] && [ "$TESTS_TIMED_OUT" = 0 ]; then
		optional 30 graph_api_tests gpu-test_cuda_ops-graph-api
	fi
	ours_variant bench-ours-bf16-graph-api MP_CUDNN_API=graph
	run bench-ours-bf16-graph-api-ops 60 env MP_CUDNN_API=graph BENCH_OPS=1 MP_CUDA_PROFILE=1 \
		"$BIN/tests/gpu/bench_step" cuda 128 5 112 1 bf16 || say "bench-ours-bf16-graph-api-ops: failed"
	if [ "$QUICK" = 0 ]; then
		# evaluation's compiled pass as CUDA graphs
		if [ "$TORCH_OK" = 0 ]; then
			optional 120 torch_bench bench-torch-eval-compile-ro 150 --device cuda --eval --compile \
				--mode reduce-overhead --warmup 5
			optional 40 torch_bench profile-torch 60 --device cuda --steps 5 --profile
		fi
		# the likeliest best settings together: bf16 activations with the
		# graph API's plans, and with timed algorithms
		optional 40 ours_variant bench-ours-bf16-act-graph-api MP_CUDA_ACTIVATIONS=bf16 \
			MP_CUDNN_API=graph
		optional 40 ours_variant bench-ours-bf16-act-timed MP_CUDA_ACTIVATIONS=bf16 \
			MP_CUDNN_SEARCH=timed
		# what the two savings on the default path gain
		optional 40 ours_variant bench-ours-bf16-savings-off MP_CUDA_KEEP_FILTERS=0 \
			MP_CUDA_BACKWARD_ADD=0
		optional 40 ours_variant bench-ours-bf16-heuristic MP_CUDNN_SEARCH=heuristic
		optional 40 ours_variant bench-ours-bf16-timed MP_CUDNN_SEARCH=timed
		optional 40 ours_variant bench-ours-bf16-timed-nondet MP_CUDNN_SEARCH=timed \
			MP_CUDNN_DETERMINISTIC=0
		optional 40 ours_variant bench-ours-bf16-legacy-stream MP_CUDA_STREAM=legacy
	fi
fi

# ---- the programs' own tests on the GPU ---------------------------------------------
# tests/cli/emucuda.bats, which make test runs on a device emulated on the
# host, here on the H200 through the real module; last, so that the
# figures come first when the budget is short
BATS=$(command -v bats || true)
[ -z "$BATS" ] && [ -x "$DEPS/bats/bin/bats" ] && BATS=$DEPS/bats/bin/bats
# shellcheck disable=SC2317 # run by optional
gpu_programs() {
	local log=$LOGS/gpu-programs.log
	if run gpu-programs 150 env MP_TEST_CUDA_MODULE="$ROOT/build/lib/miniplaces/libmp-cuda.so" \
		MP_TEST_PYTHON="$PY" MP_BIN="$ROOT/build/bin" MP_SCRIPTS="$ROOT/build/scripts" \
		MP_ROOT="$ROOT" "$BATS" "$ROOT/tests/cli/emucuda.bats"; then
		record gpu-programs ok "$ELAPSED" "$(grep -c '^ok' "$log") of $(grep -m1 -o '^1\.\.[0-9]*' "$log" | cut -c4-) tests"
	else
		record gpu-programs FAIL "$ELAPSED" "$(grep -c '^not ok' "$log") not ok; see gpu-programs.log"
	fi
}
if [ "$BUILT" = full ] && [ "$GPU" = 1 ] && [ -n "$BATS" ]; then
	optional 60 gpu_programs gpu-programs
elif [ "$BUILT" = full ] && [ "$GPU" = 1 ]; then
	record gpu-programs SKIP 0 "no bats (scripts/device-deps.sh carries it)"
else
	record gpu-programs SKIP 0 "needs the full build (scripts/device-deps.sh) and a GPU"
fi

# ---- summary ------------------------------------------------------------------------
{
	echo "device-check $(date -u +%FT%TZ), $(($(date +%s) - START)) s; $GPU_WHY"
	echo
	printf '%-34s %-6s %6s  %s\n' stage status s note
	while IFS=$'\t' read -r s st sec note; do
		printf '%-34s %-6s %6s  %s\n' "$s" "$st" "$sec" "$note"
	done <"$RESULTS/stages.tsv"
	# the FLOP count is ours (bench_step's); PyTorch's figures are shown
	# without one when none of our benchmarks ran
	ref_line=${OURS[bf16]:-${OURS[fp32]:-${OURS[eval-bf16]:-${OURS[eval-fp32]:-}}}}
	if [ -n "$ref_line" ] || [ -n "${TORCH[*]:-}" ]; then
		echo
		[ "$GPU" = 1 ] || echo "CPU SMOKE: these numbers check the code path only; they mean nothing"
		gflop=''
		if [ -n "$ref_line" ]; then
			IFS=$'\t' read -r _ batch size _ _ gflop _ <<<"$ref_line"
			printf 'network: reference (depth 9, shortcut A), batch %s, %s px; forward %.3f GFLOP/image, training = 3 x forward\n' "$batch" "$size" "$gflop"
		else
			echo "network: reference (depth 9, shortcut A); none of our benchmarks ran, so no FLOP count: TFLOP/s and MFU not given"
		fi
		mfu() { [ -n "$gflop" ] && awk -v i="$1" -v g="$gflop" -v p="$PEAK_TFLOPS" 'BEGIN { printf "%.2f%%", 100 * 3 * g * i / 1000 / p }' || echo -; }
		tfl() { [ -n "$gflop" ] && awk -v i="$1" -v g="$gflop" 'BEGIN { printf "%.2f", 3 * g * i / 1000 }' || echo -; }
		# numbers, never strings, whatever the awk
		greater() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'; }
		ratio() { [ -n "$1" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }' || echo -; }
		ips_of() { echo "${OURS[$1]:-}" | cut -f4; }
		printf '%-42s %12s %10s %10s %10s %10s\n' run images/s TFLOP/s MFU bf16/it fp32/it
		for prec in bf16 fp32; do
			[ -n "${OURS[$prec]:-}" ] || continue
			v=$(ips_of "$prec")
			printf '%-42s %12s %10s %10s %10s %10s\n' "ours ($(echo "${OURS[$prec]}" | cut -f1), $prec)" "$v" "$(tfl "$v")" "$(mfu "$v")" - -
		done
		# PyTorch's best bf16 configuration among those measured; the
		# ratio line names it, and the ones the check did not measure
		best='' best_name='' missing=''
		for k in bench-torch-eager bench-torch-eager-cudnn-benchmark bench-torch-compile \
			bench-torch-compile-ro bench-torch-fp32; do
			v=${TORCH[$k]:-}
			if [ -z "$v" ]; then
				[ $k = bench-torch-fp32 ] || missing="$missing ${k#bench-torch-}"
				continue
			fi
			if [ $k != bench-torch-fp32 ] && { [ -z "$best" ] || greater "$v" "$best"; }; then
				best=$v
				best_name=${k#bench-torch-}
			fi
			printf '%-42s %12s %10s %10s %10s %10s\n' "PyTorch ${k#bench-torch-} ($([ $k = bench-torch-fp32 ] && echo 'fp32, no TF32' || echo 'bf16, NHWC'))" "$v" "$(tfl "$v")" "$(mfu "$v")" \
				"$(ratio "$(ips_of bf16)" "$v")" "$(ratio "$(ips_of fp32)" "$v")"
		done
		echo "MFU against $PEAK_TFLOPS TFLOP/s (dense bf16 datasheet peak of the H100/H200 SXM), the fp32 rows too (fp32 without tensor cores peaks at 67 TFLOP/s there)"
		best_of="PyTorch's best bf16 configuration measured ($best_name${missing:+; not measured:$missing})"
		[ -n "$best" ] && [ -n "$(ips_of bf16)" ] &&
			echo "ours bf16 / $best_of: $(ratio "$(ips_of bf16)" "$best") (goal 1.3)"
		act=$(ips_of bench-ours-bf16-act)
		if [ -n "$act" ]; then
			echo "ours bf16, activations in bf16 (MP_CUDA_ACTIVATIONS=bf16): $act images/s, $(tfl "$act") TFLOP/s, MFU $(mfu "$act"); / float activations: $(ratio "$act" "$(ips_of bf16)")"
			[ -n "$best" ] && echo "ours bf16 with bf16 activations / $best_of: $(ratio "$act" "$best") (goal 1.3)"
		fi
		# evaluation: one forward pass an image
		emfu() { [ -n "$gflop" ] && awk -v i="$1" -v g="$gflop" -v p="$PEAK_TFLOPS" 'BEGIN { printf "%.2f%%", 100 * g * i / 1000 / p }' || echo -; }
		etfl() { [ -n "$gflop" ] && awk -v i="$1" -v g="$gflop" 'BEGIN { printf "%.2f", g * i / 1000 }' || echo -; }
		if [ -n "${OURS[eval-bf16]:-}${OURS[eval-fp32]:-}${TORCH[bench-torch-eval-eager]:-}${TORCH[bench-torch-eval-compile]:-}${TORCH[bench-torch-eval-compile-ro]:-}" ]; then
			echo
			echo "evaluation (inference forward pass + the logits to the host; TFLOP/s and MFU of 1 x forward):"
			printf '%-42s %12s %10s %10s %10s %10s\n' run images/s TFLOP/s MFU bf16/it fp32/it
			for prec in bf16 fp32; do
				[ -n "${OURS[eval-$prec]:-}" ] || continue
				v=$(ips_of "eval-$prec")
				printf '%-42s %12s %10s %10s %10s %10s\n' "ours ($(echo "${OURS[eval-$prec]}" | cut -f1), $prec)" "$v" "$(etfl "$v")" "$(emfu "$v")" - -
			done
			ebest='' ebest_name='' emissing=''
			for k in bench-torch-eval-eager bench-torch-eval-compile bench-torch-eval-compile-ro; do
				v=${TORCH[$k]:-}
				if [ -z "$v" ]; then
					emissing="$emissing ${k#bench-torch-}"
					continue
				fi
				if [ -z "$ebest" ] || greater "$v" "$ebest"; then
					ebest=$v
					ebest_name=${k#bench-torch-}
				fi
				printf '%-42s %12s %10s %10s %10s %10s\n' "PyTorch ${k#bench-torch-eval-} (bf16, NHWC)" "$v" "$(etfl "$v")" "$(emfu "$v")" \
					"$(ratio "$(ips_of eval-bf16)" "$v")" "$(ratio "$(ips_of eval-fp32)" "$v")"
			done
			[ -n "$ebest" ] && [ -n "$(ips_of eval-bf16)" ] &&
				echo "evaluation, ours bf16 / PyTorch's best bf16 configuration measured ($ebest_name${emissing:+; not measured:$emissing}): $(ratio "$(ips_of eval-bf16)" "$ebest")"
			eact=$(ips_of bench-ours-eval-bf16-act)
			[ -n "$eact" ] && [ -n "$ebest" ] &&
				echo "evaluation, ours bf16 with bf16 activations: $eact images/s; / PyTorch's best: $(ratio "$eact" "$ebest")"
		fi
		nog=$(awk -F'\t' '$1 == "cuda"' "$LOGS/bench-ours-bf16-no-graph.log" 2>/dev/null | tail -1 | cut -f4)
		[ -n "$nog" ] && [ -n "$(ips_of bf16)" ] &&
			echo "ours bf16 as one CUDA graph / op by op (MP_CUDA_GRAPH=0): $(ips_of bf16) / $nog images/s: $(ratio "$(ips_of bf16)" "$nog")"
		noa=$(awk -F'\t' '$1 == "cuda"' "$LOGS/bench-ours-bf16-no-ahead.log" 2>/dev/null | tail -1 | cut -f4)
		[ -n "$noa" ] && [ -n "$(ips_of bf16)" ] &&
			echo "ours bf16, the batch copied ahead / in its step (BENCH_AHEAD=0): $(ips_of bf16) / $noa images/s: $(ratio "$(ips_of bf16)" "$noa")"
		off=$(awk -F'\t' '$1 == "cuda"' "$LOGS/bench-ours-bf16-savings-off.log" 2>/dev/null | tail -1 | cut -f4)
		[ -n "$off" ] && [ -n "$(ips_of bf16)" ] &&
			echo "ours bf16 / without the filters' copies and the residual's sum in the convolution (MP_CUDA_KEEP_FILTERS=0 MP_CUDA_BACKWARD_ADD=0): $(ips_of bf16) / $off images/s: $(ratio "$(ips_of bf16)" "$off")"
		b256=$(awk -F'\t' '$1 == "cuda"' "$LOGS/bench-ours-bf16-b256.log" 2>/dev/null | tail -1 | cut -f4)
		t256=${TORCH[bench-torch-eager-b256]:-}
		[ -n "$b256" ] && [ -n "$t256" ] &&
			echo "batch 256, bf16: ours $b256, PyTorch eager $t256 images/s: $(ratio "$b256" "$t256")"
		a256=$(ips_of bench-ours-bf16-act-b256)
		[ -n "$a256" ] && [ -n "$t256" ] &&
			echo "batch 256, bf16 activations: ours $a256, PyTorch eager $t256 images/s: $(ratio "$a256" "$t256")"
	fi
	[ -n "$E2E" ] && { echo; echo "mp-train / mp-eval on the GPU: $E2E"; }
	echo
	echo "stage logs: logs.tar.gz (logs/STAGE.log)"
	echo "overall: $([ $FAILED = 0 ] && echo 'no stage failed' || echo 'FAILED (see the stage logs)')"
} >"$SUMMARY"
# An error of this script's own (an unset variable) ends the block above
# early, and bash goes on: the summary then lacks its last line, and the
# check fails rather than pass on what it did not report.
if [ "$(tail -n 1 "$SUMMARY" | cut -c1-8)" != "overall:" ]; then
	say "summary: cut short by an error in this script (see above)"
	echo "overall: FAILED (the summary is cut short by an error in device-check.sh)" >>"$SUMMARY"
	FAILED=1
fi
# RESULTS_DIR keeps a few files: the summary, the stage table, this
# script's messages and the stage logs packed (--keep-logs: unpacked too)
pack_logs || say "the stage logs could not be packed into $RESULTS/logs.tar.gz"
[ "$KEEP_LOGS" = 1 ] && cp -R "$LOGS" "$RESULTS/logs"
cat "$SUMMARY"
exit $FAILED
