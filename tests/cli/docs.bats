#!/usr/bin/env bats
# What the man pages and --help say against what the programs read.

load helpers

# env_read FILE...: the variables the sources read (getenv, mp_getenv and
# the CUDA backend's env_choice), one a line.
env_read() {
	grep -ohE '(getenv|env_choice)\("[A-Z0-9_]+"' "$@" | sed -E 's/.*\("//; s/"$//' | sort -u
}

# env_documented PAGE: the variables of PAGE's ENVIRONMENT section.
env_documented() {
	sed -n '/^\.Sh ENVIRONMENT/,/^\.Sh /p' "$MP_ROOT/man/$1" |
		sed -n 's/^\.It Ev \([A-Z0-9_]*\).*/\1/p' | sort -u
}

@test "every environment variable the programs read is in their man pages' ENVIRONMENT" {
	cd "$MP_ROOT"
	# the backends serve mp-train and mp-eval alike; mp_eval.c only mp-eval
	local backend page
	backend=$(env_read kernels/cpu/*.c kernels/cuda/*.c kernels/cuda/*.cu common/mp_backends.c)
	[ -n "$backend" ] || fail "no variables found: the pattern is stale"
	for page in mp-train.1 mp-eval.1; do
		assert_equal "$page lacks: $(comm -23 <(echo "$backend") <(env_documented "$page"))" \
			"$page lacks: "
	done
	assert_equal "mp-eval.1 lacks: $(comm -23 <(env_read common/mp_eval.c) <(env_documented mp-eval.1))" \
		"mp-eval.1 lacks: "
}

@test "every variable of an ENVIRONMENT section is read, by the programs or by OpenMP" {
	cd "$MP_ROOT"
	local page read
	read=$(env_read kernels/cpu/*.c kernels/cuda/*.c kernels/cuda/*.cu common/*.c tools/*.c)
	for page in mp-train.1 mp-eval.1; do
		assert_equal "$(comm -13 <(echo "$read") <(env_documented "$page") | grep -v '^OMP_')" ""
	done
}

@test "--help, the man page and the option table name the same long options" {
	local p src help man
	for p in mp-batchwriter mp-train mp-eval mp-inspect; do
		src=$(grep -oE '^	\{"[a-z-]+", (no|required)_argument' "$MP_ROOT/tools/$p.c" |
			sed -E 's/^	\{"([a-z-]+)".*/\1/' | sort -u)
		help=$("$MP_BIN/$p" --help | grep -oE -- '--[a-z][a-z-]*' | sed 's/^--//' | sort -u)
		man=$(grep -oE 'Fl \\-[a-z][a-z-]*' "$MP_ROOT/man/$p.1" | sed 's/^Fl \\-//' | sort -u)
		[ -n "$src" ] || fail "$p: no options found in tools/$p.c: the pattern is stale"
		assert_equal "$p --help: $help" "$p --help: $src"
		assert_equal "$p.1: $man" "$p.1: $src"
	done
}
