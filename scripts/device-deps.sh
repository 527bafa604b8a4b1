#!/usr/bin/env bash
# Copies the libraries the full build needs and a GPU machine may lack
# (TurboJPEG, LMDB, cJSON: headers, shared libraries, pkg-config files with
# a relocatable prefix), and bats for the programs' tests, from this machine
# into DIR (default
# build/device-deps), so that scripts/device-check.sh can build and run the
# programs themselves there:
#
#   bash scripts/device-deps.sh            # here, once
#   device run with carry ["build/device-deps"]:
#     bash scripts/device-check.sh "$OUT"  # finds build/device-deps
#
# The libraries are this machine's (x86-64, glibc of Debian 12); a newer
# glibc there runs them.
#
# usage: device-deps.sh [DIR]
set -eu
prog=device-deps.sh
usage_args="[DIR]"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case ${1:-} in
-h | --help)
	cat <<EOF
usage: $prog [DIR]

Copy TurboJPEG, LMDB and cJSON (headers, shared libraries, pkg-config files
with a relocatable prefix), and bats, from this machine into DIR (default
build/device-deps), for scripts/device-check.sh's full build and the
programs' tests on a machine that lacks them.
EOF
	exit 0
	;;
--) shift ;;
-?*) usage "unknown option $1" ;;
esac
[ $# -le 1 ] || usage "one DIR only, not \"$1\" and \"$2\""

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(safe_path "${1:-$ROOT/build/device-deps}")
command -v pkg-config >/dev/null || die "pkg-config is missing (Debian: pkg-config)"
# each library's pkg-config name and Debian -dev package, all checked
# before DIR is made
LIBS=(libturbojpeg:libturbojpeg0-dev lmdb:liblmdb-dev libcjson:libcjson-dev)
for l in "${LIBS[@]}"; do
	pkg-config --exists "${l%%:*}" || die "no ${l%%:*}.pc (Debian: ${l#*:})"
done
err=$(mkdir -p -- "$OUT/include/cjson" "$OUT/lib/pkgconfig" 2>&1) ||
	die "$OUT: cannot create the directory (${err##*: })"
OUT=$(cd "$OUT" && pwd)

copy_lib() { # PKG-CONFIG-NAME DEBIAN-PACKAGE HEADER... : the library, its headers, its .pc
	local name=$1 dev=$2 libdir pc lib real h soname
	shift 2
	# not pc=$(...)/NAME.pc: under set -e a failing pkg-config would end
	# the script there, without this message
	if ! pc=$(pkg-config --variable=pcfiledir "$name" 2>/dev/null) || [ ! -f "$pc/$name.pc" ]; then
		die "no $name.pc (Debian: $dev)"
	fi
	pc=$pc/$name.pc
	libdir=$(pkg-config --variable=libdir "$name")
	for h in "$@"; do
		cp "/usr/include/$h" "$OUT/include/$h"
	done
	# the .so the linker uses and the soname the programs load
	lib=$(sed -n 's/^Libs:.*-l\([A-Za-z0-9_]*\).*/\1/p' "$pc" | head -1)
	real=$(readlink -f "$libdir/lib$lib.so")
	cp "$real" "$OUT/lib/"
	soname=$(objdump -p "$real" | awk '$1 == "SONAME" {print $2}')
	ln -sf "$(basename "$real")" "$OUT/lib/$soname"
	ln -sf "$(basename "$real")" "$OUT/lib/lib$lib.so"
	# prefix relative to the .pc file, so that the folder can move
	{
		# shellcheck disable=SC2016 # pkg-config's own variables, written as they are
		printf '%s\n' 'prefix=${pcfiledir}/../..' 'exec_prefix=${prefix}' \
			'libdir=${prefix}/lib' 'includedir=${prefix}/include'
		grep -v -e '^prefix=' -e '^exec_prefix=' -e '^libdir=' -e '^includedir=' "$pc"
	} >"$OUT/lib/pkgconfig/$name.pc"
	echo "$prog: $name $(pkg-config --modversion "$name"): $(basename "$real")"
}

copy_lib libturbojpeg libturbojpeg0-dev turbojpeg.h
copy_lib lmdb liblmdb-dev lmdb.h
copy_lib libcjson libcjson-dev cjson/cJSON.h
# bats (bash scripts, which find their libraries beside themselves), for
# the programs' own tests on the GPU (tests/cli/emucuda.bats on the device)
if [ -x /usr/bin/bats ] && [ -d /usr/lib/bats-core ] && [ -d /usr/libexec/bats-core ]; then
	mkdir -p "$OUT/bats/bin" "$OUT/bats/lib" "$OUT/bats/libexec"
	cp /usr/bin/bats "$OUT/bats/bin/"
	cp -r /usr/lib/bats-core "$OUT/bats/lib/"
	cp -r /usr/libexec/bats-core "$OUT/bats/libexec/"
	echo "$prog: bats $(bats --version | awk '{print $2}'): bats/bin/bats"
else
	echo "$prog: no bats here (Debian: bats): the GPU check will skip the programs' tests"
fi
du -sh "$OUT" | awk -v prog="$prog" -v out="$OUT" '{ print prog ": " $1 " in " out }'
