#!/usr/bin/env bats
# mp-eval's output files as a shell user names them: through symbolic
# links, as standard output under another name, /dev/null for several,
# places that cannot be written, and options given twice.

load helpers

ev() { "$MP_BIN/mp-eval" "$@"; }

# 12 labelled 16x16 images of 4 classes as a DB, and random weights.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$PY" "$MKIMAGES" classes im 12 16 16 4 >val.txt
	"$MP_BIN/mp-batchwriter" -q --classes 4 --size 16 -o val.db val.txt
	random_weights 4 w.st
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
}

@test "an output through a symbolic link replaces the file the link names; the link stays" {
	mkdir res
	echo old >res/p.tsv
	ln -s res/p.tsv p.tsv
	ln -s "$PWD/res/s.txt" s.txt # to a file not yet there: the link is kept too
	run ev -q -m "$D/w.st" --probs p.tsv --submission s.txt "$D/val.db"
	assert_status 0
	[[ -L p.tsv && -L s.txt ]] || fail "a link was replaced: $(ls -l)"
	assert_equal "$(head -c 10 res/p.tsv)" "$(printf 'name\tlabel')"
	assert_equal "$(wc -l <res/s.txt)" 12
	assert_files res p.tsv s.txt
	# a file replaced keeps its permissions; a new one has the umask's
	chmod 600 res/p.tsv
	run bash -c 'umask 022 && exec "$@"' _ "$MP_BIN/mp-eval" -q -m "$D/w.st" --probs p.tsv \
		--per-class pc.tsv "$D/val.db"
	assert_status 0
	assert_equal "$(stat -c %a res/p.tsv) $(stat -c %a pc.tsv)" "600 644"
}

@test "standard output under another name (/dev/fd/1, the file it is redirected to) is -" {
	ev -q -m "$D/w.st" --probs - "$D/val.db" >want.tsv
	for name in /dev/fd/1 /proc/self/fd/1; do
		# a pipe: the table is not printed after the rows
		run ev -m "$D/w.st" --probs "$name" "$D/val.db"
		assert_status 0
		assert_equal "$output" "$(cat want.tsv)"
		# a file: written through, not replaced by a file of that name
		ev -m "$D/w.st" --probs "$name" "$D/val.db" >got.tsv
		cmp want.tsv got.tsv
		run ev -m "$D/w.st" --probs "$name" --json "$D/val.db"
		assert_status 2
		assert_equal "$output" "mp-eval: only one output may go to stdout (-)"
	done
	ev -m "$D/w.st" --submission got.tsv "$D/val.db" >got.tsv
	assert_equal "$(wc -l <got.tsv)" 12
	assert_files . got.tsv want.tsv
}

@test "standard error under another name, redirected to a file, gets the rows among the messages" {
	ev -q -m "$D/w.st" --probs - "$D/val.db" >want.tsv
	for name in /dev/stderr /dev/fd/2; do
		# what the file held stays, and the rows follow it: it was
		# replaced by a file of the rows before
		echo "before" >err.txt
		ev -q -m "$D/w.st" --probs "$name" "$D/val.db" 2>>err.txt
		assert_equal "$(head -1 err.txt)" "before"
		assert_equal "$(tail -n +2 err.txt)" "$(cat want.tsv)"
	done
	# a --probs and a --submission both there are two outputs in one file
	status=0
	ev -q -m "$D/w.st" --probs /dev/stderr --submission /dev/fd/2 "$D/val.db" 2>err.txt || status=$?
	assert_equal "$status" 2
	assert_equal "$(cat err.txt)" "mp-eval: --submission /dev/fd/2: the same file as --probs"
	assert_files . err.txt want.tsv
}

@test "several outputs to /dev/null are no error" {
	run ev -m "$D/w.st" --probs /dev/null --submission /dev/null --per-class /dev/null \
		--confusion /dev/null "$D/val.db"
	assert_status 0
	assert_contains "$output" "combined"
}

@test "an output that cannot be created stops the run before any image is evaluated" {
	mkdir adir
	for out in "--submission adir" "--per-class nodir/c.tsv" "--confusion adir"; do
		run ev -q -m "$D/w.st" --probs p.tsv $out --dump-views views "$D/val.db"
		assert_status 1
		assert_equal "$output" "mp-eval: ${out#* }: $([[ $out == *nodir* ]] &&
			echo 'No such file or directory' || echo 'Is a directory')"
		assert_files . adir
	done
}

@test "--dump-views: the directory it creates may hold the outputs; a start that fails leaves none" {
	run ev -q -m "$D/w.st" --dump-views dd --submission dd/s.txt --probs dd/p.tsv "$D/val.db"
	assert_status 0
	assert_equal "$(wc -l <dd/s.txt)" 12
	assert_equal "$(wc -l <dd/p.tsv)" 13
	assert_equal "$(find dd -name '*.png' | wc -l)" 1
	# an output that cannot be created: the directory made for the views
	# goes, with the temporary file of the output inside it
	run ev -q -m "$D/w.st" --dump-views dd2 --submission dd2/s.txt --per-class nodir/pc.tsv "$D/val.db"
	assert_status 1
	assert_equal "$output" "mp-eval: nodir/pc.tsv: No such file or directory"
	assert_files . dd
	# one that was there stays
	mkdir mine
	run ev -q -m "$D/w.st" --dump-views mine --submission mine/s.txt --per-class nodir/pc.tsv "$D/val.db"
	assert_status 1
	assert_files . dd mine
	assert_files mine
}

@test "--dump-views that names the dataset or an output is refused before anything is read" {
	cp -r "$D/val.db" v.db
	run ev -q -m "$D/w.st" --dump-views v.db v.db
	assert_status 2
	assert_equal "$output" "mp-eval: --dump-views v.db: that is the dataset, which it would write into"
	run ev -q -m "$D/w.st" --probs x --dump-views ./x v.db
	assert_status 2
	assert_equal "$output" "mp-eval: --dump-views ./x: the same file as --probs"
	assert_files . v.db
	assert_files v.db data.mdb lock.mdb
}

@test "an option given twice takes its last value; --multiscale and --scales replace each other" {
	run ev -q --json -m "$D/w.st" --multiscale --scales 20 --topk 2 --topk 3 "$D/val.db"
	assert_status 0
	assert_equal "$(json_get - '[s["size"] for s in d["scales"]], d["topk"]' <<<"$output")" "([20], 3)"
	run ev -q --json -m "$D/w.st" --scales 20 --multiscale "$D/val.db"
	assert_equal "$(json_get - '[s["size"] for s in d["scales"]]' <<<"$output")" "[112, 128, 160, 240]"
}

@test "--batch larger than the input takes the memory of the images there are, from a stream too" {
	head -n 2 "$D/val.txt" | sed "s|^|$D/|" >two.txt
	"$MP_BIN/mp-batchwriter" -q --classes 4 --size 16 two.txt >two.stream
	# 65536 images of 3 x 1024 x 1024 floats would be 824 GB
	run ev -q --json -m "$D/w.st" --batch 65536 --scales 1024 --list two.txt
	assert_status 0
	assert_equal "$(json_get - 'd["images"]' <<<"$output")" 2
	run ev -q --json -m "$D/w.st" --batch 65536 --scales 1024 - <two.stream
	assert_status 0
	assert_equal "$(json_get - 'd["images"]' <<<"$output")" 2
}

@test "--scales takes whole numbers in decimal only: no hexadecimal, exponent or fraction" {
	for arg in 0x10 1e1 16.0 16.5 16,x 16,0 ' 16,17,'; do
		run ev -q -m "$D/w.st" --scales "$arg" "$D/val.db"
		assert_status 2
		assert_contains "$output" "--scales: \"$arg\": entry "
		assert_contains "$output" " is not a whole number from 1 to 4096"
	done
}

@test "a summary that cannot be written (a full disk, a reader gone) fails the run with no earlier output replaced" {
	for out in --json ""; do
		echo old >p.tsv
		echo old >s.txt
		# shellcheck disable=SC2086 # none, or one word
		run --separate-stderr bash -c '"$@" >/dev/full' _ "$MP_BIN/mp-eval" -m "$D/w.st" $out \
			--probs p.tsv --submission s.txt "$D/val.db"
		assert_status 1
		assert_equal "$stderr" "mp-eval: <stdout>: write error: No space left on device"
		assert_equal "$(cat p.tsv s.txt)" $'old\nold'
		assert_files . p.tsv s.txt
	done
	run --separate-stderr closed_pipe "$MP_BIN/mp-eval" -m "$D/w.st" --probs p.tsv "$D/val.db"
	assert_status 141
	assert_equal "$(cat p.tsv)" old
	assert_files . p.tsv s.txt
	# written, they are replaced
	run ev -m "$D/w.st" --probs p.tsv --submission s.txt "$D/val.db"
	assert_status 0
	assert_equal "$(wc -l <s.txt)" 12
}
