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
	# every Ev of an item's head: ".It Ev A , Ev B" documents both
	sed -n '/^\.Sh ENVIRONMENT/,/^\.Sh /p' "$MP_ROOT/man/$1" | grep '^\.It ' |
		grep -o 'Ev [A-Z0-9_]*' | cut -c4- | sort -u
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

@test "every variable of an ENVIRONMENT section is read, by the programs, by OpenMP, OpenBLAS or the CUDA runtime" {
	cd "$MP_ROOT"
	local page read
	read=$(env_read kernels/cpu/*.c kernels/cuda/*.c kernels/cuda/*.cu common/*.c tools/*.c)
	for page in mp-train.1 mp-eval.1; do
		assert_equal "$(comm -13 <(echo "$read") <(env_documented "$page") |
			grep -v -e '^OMP_' -e '^OPENBLAS_' -e '^CUDA_VISIBLE_DEVICES$')" ""
	done
}

@test "--help, the man page's OPTIONS and the option table name the same long options" {
	local p src help man
	for p in mp-batchwriter mp-train mp-eval mp-inspect; do
		src=$(grep -oE '^	\{"[a-z-]+", (no|required)_argument' "$MP_ROOT/tools/$p.c" |
			sed -E 's/^	\{"([a-z-]+)".*/\1/' | sort -u)
		help=$("$MP_BIN/$p" --help | grep -oE -- '--[a-z][a-z-]*' | sed 's/^--//' | sort -u)
		man=$(sed -n '/^\.Sh OPTIONS/,/^\.Sh /p' "$MP_ROOT/man/$p.1" |
			grep -oE '^\.It Fl .*' | grep -oE 'Fl \\-[a-z][a-z-]*' | sed 's/^Fl \\-//' | sort -u)
		[ -n "$src" ] || fail "$p: no options found in tools/$p.c: the pattern is stale"
		assert_equal "$p --help: $help" "$p --help: $src"
		assert_equal "$p.1: $man" "$p.1: $src"
	done
}

@test "every --help fits 79 columns" {
	for t in mp-batchwriter mp-train mp-eval mp-inspect; do
		run "$MP_BIN/$t" --help
		assert_status 0
		assert_equal "$(awk -v t="$t" 'length > 79 { print t ": " $0 }' <<<"$output")" ""
	done
}

@test "mp-train(1)'s example that follows a growing log prints each epoch row as it comes" {
	local filter
	filter=$(sed -n 's/^\$ tail -f run2\/train\.log | //p' "$MP_ROOT/man/mp-train.1" | sed 's/\\e/\\/g')
	[ -n "$filter" ] || fail "the example is gone from mp-train(1)"
	# a log that grows: an epoch row, a pause, another
	cat >grow.sh <<'END'
printf 'kind\tepoch\tstep\tlr\tloss\tt1\tt5\tvl\tv1\tv5\tips\ts\n'
printf 'epoch\t1\t5\t0.1\t2.3\t0.9\t0.5\t2.2\t0.81\t0.41\t900\t1\n'
sleep 3
printf 'epoch\t2\t10\t0.1\t2.1\t0.8\t0.4\t2.0\t0.72\t0.32\t900\t2\n'
END
	# typed at a terminal, as in the example: the first row must not wait
	# for the second (an awk that reads its input in blocks holds it back)
	on_tty bash -c "bash grow.sh | $filter" | while IFS= read -r l; do
		printf '%s %s\n' "$(date +%s.%N)" "$l"
	done >got
	assert_equal "$(awk '{ $1 = ""; print }' got | tr -d '\r' | tr -s ' \t' ' ')" " 1 0.81 0.41
 2 0.72 0.32"
	assert_less 2 "$(awk 'NR == 1 { a = $1 } NR == 2 { print $1 - a }' got)"
}

# tiny_kit DIR [IMAGES LISTS [CLASSES]]: a Mini-Places development kit in
# miniature, laid out as the GitHub kit has it once its images are unpacked
# into data/: data/images/{train/a/abbey,val,test}/*.jpg and the lists in
# data/, or with the images and lists in the kit's IMAGES and LISTS (3
# classes, or CLASSES up to 5; 4 train images a class, 6 val, 3 test).
tiny_kit() {
	"$PY" - "$1" "${2:-data/images}" "${3:-data}" "${4:-3}" <<'END'
import os, sys
from PIL import Image
kit = sys.argv[1]
img, lists = kit + "/" + sys.argv[2], kit + "/" + sys.argv[3]
os.makedirs(lists, exist_ok=True)
cats = ["/a/abbey", "/b/beach", "/c/canyon", "/d/desert", "/f/forest"][:int(sys.argv[4])]
colours = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200))
def jpg(rel, c):
    os.makedirs(os.path.dirname(img + "/" + rel), exist_ok=True)
    Image.new("RGB", (24, 20), colours[c]).save(img + "/" + rel)
with open(lists + "/categories.txt", "w") as f:
    f.writelines(f"{n} {i}\n" for i, n in enumerate(cats))
with open(lists + "/train.txt", "w") as f:
    for c, n in enumerate(cats):
        for i in range(1, 5):
            jpg(f"train{n}/{i:08d}.jpg", c)
            f.write(f"train{n}/{i:08d}.jpg {c}\n")
with open(lists + "/val.txt", "w") as f:
    for i in range(1, 7):
        jpg(f"val/{i:08d}.jpg", i % len(cats))
        f.write(f"val/{i:08d}.jpg {i % len(cats)}\n")
for i in range(1, 4):
    jpg(f"test/{i:08d}.jpg", i % len(cats))
END
}

# readme_block AFTER: the ```sh block of README.md that follows the line
# holding AFTER.
readme_block() {
	awk -v after="$1" 'index($0, after) { on = 1; next }
		on && /^```sh$/ { inside = 1; next }
		inside && /^```$/ { exit }
		inside' "$MP_ROOT/README.md"
}

@test "README's commands by hand run as written on a kit in miniature, and the log has the columns it lists" {
	local block kit=$PWD/kit p course
	block=$(readme_block "By hand:")
	assert_contains "$block" "cd /data/miniplaces"
	tiny_kit "$kit"
	# the installed programs; mp-train with a network and a run small enough
	# for a test (the same options on --resume, as the network must match)
	mkdir bin
	for p in mp-batchwriter mp-inspect mp-eval; do
		printf '#!/bin/sh\nexec "%s" "$@"\n' "$MP_BIN/$p" >"bin/$p"
	done
	printf '#!/bin/sh\nexec "%s" "$@" %s\n' "$MP_BIN/mp-train" \
		"--depth 1 --widths 4,8 --crop 16 --scale-min 16 --scale-max 20 --batch 8 --epochs 1 --threads 1" \
		>bin/mp-train
	chmod +x bin/*
	# the build and the GPU run left out (and the plot without gnuplot); the
	# kit where the README has it
	local skip=(-e '^make ' -e '--backend cuda')
	command -v gnuplot >/dev/null || skip+=(-e 'plot-log')
	grep -v "${skip[@]}" <<<"$block" | sed "s|/data/miniplaces|$kit|" >byhand.sh
	run bash -c "cd '$MP_ROOT' && PATH='$PWD/bin':\$PATH bash -euo pipefail '$PWD/byhand.sh'"
	assert_status 0
	assert_equal "$(cut -d ' ' -f 1 "$kit/submission.txt")" "test/00000001.jpg
test/00000002.jpg
test/00000003.jpg"
	# k is the number of classes when it is below 5
	assert_equal "$(awk '{ print NF }' "$kit/submission.txt" | sort -u)" 4
	# the layout the block's comment gives for the course's tarballs
	course=$(grep -o "the course's tarballs: .*" <<<"$block" | sed "s/^the course's tarballs: //")
	[[ $course == img=*' 'lists=* ]] || fail "no layout for the course's tarballs in the block: $course"
	p=${course%% *}
	tiny_kit course "${p#img=}" "${course#* lists=}"
	sed -e "s|$kit|$PWD/course|" -e "s|^img=[^ ]* lists=[^ ]*|$course|" byhand.sh >course.sh
	run bash -c "cd '$MP_ROOT' && PATH='$PWD/bin':\$PATH bash -euo pipefail '$PWD/course.sh'"
	assert_status 0
	assert_equal "$(cut -d ' ' -f 1 course/submission.txt)" "$(cut -d ' ' -f 1 "$kit/submission.txt")"
	[ -s "$kit/run1/train.png" ] || ! command -v gnuplot >/dev/null || fail "no run1/train.png"
	# the log's columns: as README and mp-train(1) list them
	local header readme man
	header=$(head -1 "$kit/run1/train.log" | tr '\t' ' ')
	readme=$(tr '\n' ' ' <"$MP_ROOT/README.md" | grep -oE 'a TSV log \(`[^`]*`\)' | sed -E 's/.*\(`//; s/`\)$//')
	man=$(sed -n '/^The log, by default/,/^\.El/p' "$MP_ROOT/man/mp-train.1" |
		sed -n 's/^\.It Li //p' | sed 's/ , / /g' | tr '\n' ' ' | sed 's/ $//')
	assert_equal "README: $readme" "README: $header"
	assert_equal "mp-train.1: $man" "mp-train.1: $header"
}

# man_columns PAGE START: the names of the .It Li items of the first list
# after the line matching START in man/PAGE, one a line ("a , b" is two).
man_columns() {
	sed -n "/$2/,/^\.El/p" "$MP_ROOT/man/$1" | sed -n 's/^\.It Li //p' | sed 's/ , /\n/g'
}

# man_labels PAGE SECTION: the "label:   " starts of the unindented lines of
# the first literal display in the .Ss SECTION of man/PAGE.
man_labels() {
	sed -n "/^\.Ss $2\$/,/^\.Ed/p" "$MP_ROOT/man/$1" | sed -n '/^\.Bd/,/^\.Ed/p' |
		sed -n -E 's/^([^ .][^:]*: *).*/\1/p'
}

# man_line PAGE REGEX: the line of man/PAGE's text (rendered on one line a
# paragraph) that matches REGEX.
man_line() {
	mandoc -Tascii -O width=1000 "$MP_ROOT/man/$1" | col -bx | grep -E -- "$2"
}

# json_keys: the keys of the JSON object on stdin (or of the first object
# of the array), one a line, in order.
json_keys() {
	"$PY" -c 'import json, sys
d = json.load(sys.stdin)
print("\n".join(d[0] if isinstance(d, list) else d))'
}

# assert_keys_documented TEXT JSON: every key of the JSON object (or of
# the first object of the array) is a word of TEXT.
assert_keys_documented() {
	local k keys
	keys=$(printf '%s' "$2" | json_keys)
	[ -n "$keys" ] || fail "no keys in: $2"
	for k in $keys; do
		grep -qw -- "$k" <<<"$1" || fail "the key $k is not documented in: $1"
	done
}

@test "the tables, summaries and JSON keys that the man pages describe are those the programs print" {
	command -v mandoc >/dev/null || skip "mandoc is not installed"
	tiny_kit kit
	local img=kit/data/images lists=kit/data w
	bw -q -r $img -c $lists/categories.txt --size 16 -o train.db $lists/train.txt
	"$MP_BIN/mp-train" -q -d train.db -o run --depth 1 --widths 4,8 --crop 16 --scale-min 16 \
		--scale-max 16 --batch 4 --epochs 1 --threads 1
	w=run/weights.safetensors

	# tab-separated tables: the header line is the man page's list
	assert_equal "--list: $(inspect --list train.db | head -1 | tr '\t' '\n')" \
		"--list: $(man_columns mp-inspect.1 '^\.Ss Listing')"
	assert_equal "--tensors: $(inspect --tensors $w | head -1 | tr '\t' '\n')" \
		"--tensors: $(man_columns mp-inspect.1 '^\.Ss Tensor statistics')"
	assert_equal "--diff: $(inspect --diff $w $w | head -1 | tr '\t' '\n')" \
		"--diff: $(man_columns mp-inspect.1 '^\.Ss Comparing two files')"

	# the summaries' labels, and where their values start
	assert_equal "$(inspect train.db | sed -n -E 's/^([^ ][^:]*: *).*/\1/p')" \
		"$(man_labels mp-inspect.1 'Dataset summary')"
	assert_equal "$(inspect $w | sed -n -E 's/^([^ ][^:]*: *).*/\1/p')" \
		"$(man_labels mp-inspect.1 'Weights summary')"

	# mp-eval's files, as FILES in mp-eval(1) lists their columns
	"$MP_BIN/mp-eval" -q -m $w --topk 2 --probs probs.tsv --per-class class.tsv \
		--confusion conf.tsv train.db
	assert_contains "$(man_line mp-eval.1 '^ +name, label, p0 ')" \
		"$(head -1 probs.tsv | cut -f 1-3 | sed 's/\t/, /g')"
	assert_equal "$(head -1 probs.tsv | awk -F '\t' '{ print NF }')" 5
	assert_contains "$(man_line mp-eval.1 '^ +class, name, images, ')" \
		"$(head -1 class.tsv | sed 's/\t/, /g; s/top2_err$/top5_err (topk_err)/')"
	assert_equal "$(head -1 conf.tsv)" "$(printf 'label\\predicted\t0\t1\t2')"
	# errors as fractions with five decimals, as mp-eval(1) and mp-train(1) say
	assert_equal "$(awk -F '\t' 'NR > 1 && ($4 !~ /^[01]\.[0-9][0-9][0-9][0-9][0-9]$/ || $5 !~ /^[01]\.[0-9][0-9][0-9][0-9][0-9]$/)' class.tsv)" ""
	assert_equal "$(awk -F '\t' 'NR > 1 { for (i = 6; i <= 10; i++) if (i != 8 && $i !~ /^(-|[01]\.[0-9][0-9][0-9][0-9][0-9])$/) print }' \
		run/train.log)" ""

	# every key of each --json output is in the paragraph that describes it
	assert_keys_documented "$(man_line mp-eval.1 '^ +--json +an object with')" \
		"$("$MP_BIN/mp-eval" -q --json -m $w train.db)"
	assert_keys_documented "$(man_line mp-inspect.1 'With --json, the summary is a JSON object')" \
		"$(inspect --json train.db)"
	assert_keys_documented "$(man_line mp-inspect.1 'With --json, the report is an object with dataset')" \
		"$(inspect --json --verify train.db)"
	# --list and --tensors: "the same keys" as the columns (and nonfinite)
	assert_equal "--json --list: $(inspect --json --list train.db | json_keys)" \
		"--json --list: $(man_columns mp-inspect.1 '^\.Ss Listing')"
	assert_keys_documented "$(man_line mp-inspect.1 'With --json the fields are an object')" \
		"$(inspect --json --record 0 train.db)"
	assert_keys_documented "$(man_line mp-inspect.1 'With --json, the summary is an object with the keys file')" \
		"$(inspect --json $w)"
	assert_keys_documented "$(man_line mp-inspect.1 'With --json the report is an object with file')" \
		"$(inspect --json --verify $w)"
	assert_equal "--json --tensors: $(inspect --json --tensors $w | json_keys)" \
		"--json --tensors: $(man_columns mp-inspect.1 '^\.Ss Tensor statistics')
nonfinite"
	assert_keys_documented "$(man_line mp-inspect.1 'keys name, max_abs, max_rel and verdict')" \
		"$(inspect --json --diff $w $w)"
}

@test "mp-eval(1)'s example of the reference's multiscale evaluation scores as the reference does" {
	# the reference (miniplaces_eval.py): each whole image resized to 112,
	# 128, 160 and 240, one view a scale, the softmax outputs averaged
	local line opts
	line=$(sed -n "/^The reference's multiscale evaluation/,/^\\\$ mp-eval /p" "$MP_ROOT/man/mp-eval.1" |
		tail -n 1)
	[[ $line == '$ mp-eval -m run/weights.safetensors '*' val.db' ]] ||
		fail "no example of the reference's multiscale evaluation in mp-eval.1: $line"
	opts=${line#'$ mp-eval -m run/weights.safetensors '}
	opts=${opts%' val.db'}
	"$PY" "$MKIMAGES" classes va 12 20 20 4 seed=9 >val.txt
	bw -q --size 16 -o val.db val.txt
	"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A 4 7 w.safetensors >/dev/null
	# shellcheck disable=SC2086 # the example's options, as a shell splits them
	"$MP_BIN/mp-eval" -q -m w.safetensors $opts --probs example.tsv val.db
	"$MP_BIN/mp-eval" -q -m w.safetensors --scales 112,128,160,240 --crops full \
		--combine prob --probs reference.tsv val.db
	cmp example.tsv reference.tsv || fail "the example ($opts) is not the reference's evaluation"
}

# ---- the man pages' EXAMPLES, run as written --------------------------------

# example_blocks PAGE [SKIP]: splits the EXAMPLES section of man/PAGE into
# files in the current directory, one a display (or .Dl line), numbered
# from 1: block-N.sh, the display's commands (each "$ " line with the
# lines that continue it, after a "\", "|" or "&&"), without the prompt,
# each in a group whose output goes to out-N-C for the display's command C;
# expect-N-C, the output the page shows after command C; block-N.py, a
# display of Python (one that starts with an import). A display of
# neither, and a command whose first line matches the regular expression
# SKIP, are left out. mdoc's \e is a backslash.
example_blocks() {
	awk -v skip="${2:-^$}" '
	function end_cmd() {
		if (cmd && !skipping) print "} >out-" n "-" cmd " 2>&1" >sh
	}
	function end_block() {
		if (kind == "sh") { end_cmd(); close(sh) }
		if (kind == "py") close(py)
		kind = ""; cmd = 0; cont = 0; skipping = 0
	}
	function line(s) {
		gsub(/\\e/, "\\", s)
		if (kind == "")
			kind = s ~ /^\$ / ? "sh" : s ~ /^import / ? "py" : "none"
		if (kind == "py")
			print s >py
		if (kind != "sh")
			return
		if (cont) {
			if (!skipping)
				print s >sh
		} else if (s ~ /^\$ /) {
			end_cmd()
			cmd++
			s = substr(s, 3)
			skipping = s ~ skip
			if (!skipping)
				print "{\n" s >sh
		} else {
			print s >("expect-" n "-" cmd)
		}
		cont = s ~ /(\\|\||&&)$/
	}
	/^\.Sh / { if (ex) end_block(); ex = $0 == ".Sh EXAMPLES"; next }
	!ex { next }
	/^\.Bd -literal/ { n++; sh = "block-" n ".sh"; py = "block-" n ".py"; inside = 1; next }
	/^\.Ed/ { inside = 0; end_block(); next }
	/^\.Dl \$ / { n++; sh = "block-" n ".sh"; line(substr($0, 5)); end_block(); next }
	inside { line($0) }
	' "$MP_ROOT/man/$1"
}

# shape: the text on stdin as the man pages show output: blanks and line
# ends as single spaces (a page breaks a long message over lines), and
# each number (a run of digits, hex digits and dots holding a digit) as N.
shape() {
	tr -s ' \t\n' '   ' | sed -E 's/[0-9a-f.]*[0-9][0-9a-f.]*/N/g; s/^ //; s/ $//'
}

# example_fixture DIR: what the examples of every page read, in DIR: the
# kit in miniature (images/ and data/ with its lists, 5 classes, the test
# list made as mp-batchwriter(1) makes it), train.db and val.db of it,
# val.stream, weights of a small network trained on it (run/, run1/ and
# run2/weights.safetensors; a.safetensors, b.safetensors, cpu.safetensors,
# cuda.safetensors; weights.safetensors with a NaN in fc.weight, for the
# examples that look for one), small.safetensors (depth 1, widths 4,8,
# shortcut B, 10 classes, as mp-weights(5) describes it), images of
# uncertain quality (scraped/, scraped.txt: a good JPEG, a truncated one,
# a text file, a PNG) and scripts/. Beside DIR: bin/, the programs on
# PATH (mp-train with a small network added to its options; python3 the
# one with PIL and torch; ssh, which runs its command here with /data/ as
# remote/), and remote/, the other machine's /data: the kit as
# /data/mp/{images,data} and as /data/images, /data/categories.txt,
# /data/val.txt.
example_fixture() {
	local fx=$1 p w
	tiny_kit "$fx" images data 5
	(cd "$fx/images" && find test -name '*.jpg' | LC_ALL=C sort) >"$fx/data/test.txt"
	mkdir bin remote
	for p in mp-batchwriter mp-inspect mp-eval; do
		printf '#!/bin/sh\nexec "%s" "$@"\n' "$MP_BIN/$p" >"bin/$p"
	done
	printf '#!/bin/sh\nexec "%s" "$@" %s\n' "$MP_BIN/mp-train" \
		"--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16 --batch 4 --threads 1" \
		>bin/mp-train
	printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" >bin/python3
	# shellcheck disable=SC2016 # the words of the script, expanded when it runs
	printf '#!/bin/bash\nshift\nset -- "${@/#\\/data\\//%s/}"\nexec bash -c "$*"\n' "$PWD/remote" >bin/ssh
	chmod +x bin/*
	ln -s "$fx" remote/mp
	ln -s "$fx/images" remote/images
	ln -s "$fx/data/categories.txt" "$fx/data/val.txt" remote/

	(
		cd "$fx" || exit
		bw -q -r images -c data/categories.txt -o train.db data/train.txt
		bw -q -r images -c data/categories.txt -o val.db data/val.txt
		bw -q -r images -c data/categories.txt data/val.txt >val.stream
		../bin/mp-train -q -d train.db -o run --epochs 1
		w=run/weights.safetensors
		mkdir run1 run2
		for p in run1/weights run2/weights a b cpu cuda; do
			cp $w $p.safetensors
		done
		"$PY" - "$MP_ROOT/scripts" $w weights.safetensors <<'END'
import sys
sys.path.insert(0, sys.argv[1])
import mp_resnet
t, meta = mp_resnet.read_safetensors(sys.argv[2])
t["fc.weight"][0, 0] = float("nan")
mp_resnet.write_safetensors(sys.argv[3], t, meta)
END
		"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 B 10 7 small.safetensors >/dev/null
		mkdir -p scraped/a/abbey
		cp images/val/00000001.jpg scraped/a/abbey/ok.jpg
		"$PY" "$MKIMAGES" make noise scraped/a/abbey/whole.jpg 64 64
		head -c 1000 scraped/a/abbey/whole.jpg >scraped/a/abbey/trunc.jpg
		rm scraped/a/abbey/whole.jpg
		echo "not an image" >scraped/a/abbey/not.jpg
		"$PY" "$MKIMAGES" make solid scraped/a/abbey/red.png 20 20
		printf 'a/abbey/%s 0\n' ok.jpg trunc.jpg not.jpg red.png >scraped.txt
		ln -s "$MP_ROOT/scripts" scripts
	)
}

# run_examples PAGE [SKIP [SED]]: runs the examples of man/PAGE (as
# example_blocks splits them, SKIP left out, the commands edited by the sed
# script SED where given) on example_fixture's files, each display in
# a copy of them without the names it gives -o (it makes those), with
# bash -e -o pipefail (and waiting for a command it put in the background);
# a command must succeed and print what the page shows after it, in shape.
# A Python display runs with torch, scripts/mp_resnet.py, images (a batch
# of two 16x16 images) and net (the reference network) at hand, and every
# weights file it leaves must pass mp-inspect --verify.
run_examples() {
	local page=$1 sh n out f
	example_fixture "$PWD/fx"
	mkdir blocks
	(cd blocks && example_blocks "$page" "${2-}")
	[[ -z ${3-} ]] || sed -i -e "$3" blocks/block-*.sh
	[[ -n $(ls blocks) ]] || fail "no examples found in $page"
	for sh in blocks/block-*.sh blocks/block-*.py; do
		[[ -e $sh ]] || continue
		n=${sh#blocks/block-}
		n=${n%.*}
		cp -a fx "b$n"
		if [[ $sh == *.sh ]]; then
			# shellcheck disable=SC2013 # the names are single words
			for out in $(grep -oE -- ' -o [^ ]+' "$sh" | cut -d ' ' -f 3); do
				rm -rf "b$n/$out"
			done
			# shellcheck disable=SC2016 # expanded when the display runs
			printf '\nfor job in $(jobs -p); do wait "$job"; done\n' >>"$sh"
			run bash -c "cd b$n && PATH='$PWD/bin':\$PATH bash -e -o pipefail '$PWD/$sh'"
			[[ $status -eq 0 ]] || fail "$page: this display failed (exit $status):" "$(cat "$sh")" \
				"its output:" "$(cat "b$n"/out-* 2>/dev/null)"
			for f in blocks/expect-"$n"-*; do
				[[ -e $f ]] || continue
				out=b$n/out-${f#blocks/expect-}
				assert_equal "$page: $(shape <"$out")" "$page: $(shape <"$f")"
			done
		else
			cat - "$sh" >"b$n/example.py" <<'END'
import sys
sys.path.insert(0, "scripts")
import torch, mp_resnet
images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
net = mp_resnet.ResNet()
END
			run bash -c "cd b$n && '$PY' example.py"
			[[ $status -eq 0 ]] || fail "$page: this Python failed:" "$(cat "$sh")" "$output"
			for f in "b$n"/*.safetensors; do
				run inspect --verify "$f"
				assert_status 0
			done
		fi
	done
}

@test "mp-batchwriter(1)'s examples run as written and print what the page shows" {
	run_examples mp-batchwriter.1
}

@test "mp-train(1)'s examples run as written" {
	# the resumed run stops after 2 of 4 epochs: the page's figures agree,
	# and the kit's 20 images make 5 steps of 4 (the following of a growing
	# log, which does not end, has a test above)
	local figures n s b
	figures=$(sed -n 's/.*Pq \([0-9]*\) images make \([0-9]*\) steps of \([0-9]*\) per epoch.*/\1 \2 \3/p' \
		"$MP_ROOT/man/mp-train.1")
	read -r n s b <<<"$figures"
	[[ -n $b ]] || fail "mp-train.1 no longer counts the steps of an epoch: the pattern is stale"
	assert_equal "$s steps" "$((n / b)) steps"
	grep -q -- "--epochs 4 --max-steps $((2 * s))\$" "$MP_ROOT/man/mp-train.1" ||
		fail "mp-train.1: no run stopped after 2 of 4 epochs of $s steps"
	run_examples mp-train.1 '^tail -f ' "s/--max-steps $((2 * s))\$/--max-steps 10/"
}

@test "mp-eval(1)'s examples run as written and print what the page shows" {
	run_examples mp-eval.1
}

@test "mp-inspect(1)'s examples run as written" {
	run_examples mp-inspect.1
}

@test "mp-inspect(1)'s -o files that are written in place are ones --extract writes, in place" {
	command -v mandoc >/dev/null || skip "mandoc is not installed"
	local line fifo link target
	line=$(man_line mp-inspect.1 'is not a regular file.* is written in place')
	read -r fifo link target <<<"$(sed -nE \
		's/.*\(a FIFO named ([^ ,]+), a link named ([^ ]+) to ([^ )]+)\).*/\1 \2 \3/p' <<<"$line")"
	[[ -n $fifo && -n $link && -n $target ]] ||
		fail "mp-inspect.1: the examples of -o files written in place are gone" "$line"
	mkimg make noise a.png 8 8
	echo "a.png 0" >list.txt
	bw -q --size 8 -o db list.txt
	inspect --extract 0 -o "want.${fifo##*.}" db
	mkfifo "$fifo"
	timeout 20 cat "$fifo" >got &
	inspect --extract 0 -o "$fifo" db
	wait $!
	[[ -p $fifo ]] || fail "$fifo is no longer a FIFO"
	cmp "want.${fifo##*.}" got
	ln -s "$target" "$link"
	inspect --extract 0 -o "$link" db
	[[ -L $link && $(readlink "$link") == "$target" ]] || fail "$link is no longer a link to $target"
	assert_files . a.png db got list.txt "$fifo" "$link" "want.${fifo##*.}"
}

@test "mp-dataset(5)'s examples run as written" {
	run_examples mp-dataset.5
}

@test "mp-weights(5)'s examples run as written and print what the page shows" {
	run_examples mp-weights.5
}

@test "mp-eval(1)'s example straight from the image files evaluates as the one through a pipe" {
	local pipe list
	example_blocks mp-eval.1
	# the commands, each on one line
	cat block-*.sh | sed -e ':a' -e '/\\$/N; s/ *\\\n */ /; ta' >commands
	pipe=$(sed -n 's/^ *\(mp-eval .*\) -$/\1/p' commands)
	list=$(grep -E '^mp-eval .*--list ' commands)
	[[ -n $pipe && -n $list ]] || fail "mp-eval.1: the examples through a pipe and from a list are gone" "$(cat commands)"
	assert_equal "$(sed -E 's/ --list [^ ]+//; s/ -r [^ ]+//' <<<"$list")" "$pipe"
}
