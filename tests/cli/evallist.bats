#!/usr/bin/env bats
# mp-eval on the image files of a list, as a folder of downloaded images
# is evaluated: large photos, the limits on what is read, and agreement
# with the same images packed into a DB.

load helpers

ev() { "$MP_BIN/mp-eval" "$@"; }

# Random weights of 6 classes trained at 16 px, and a few images.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	random_weights 6 w.safetensors
	"$PY" "$MKIMAGES" batch <<-EOF
	make gradient photo.jpg 2000 2000
	make noise small.png 16 16
	make huge-png huge.png 8 8
	EOF
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
}

# peak_kb CMD...: the largest resident size of CMD, in KB.
peak_kb() {
	"$PY" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}

@test "large photos: a batch holds one decoded image per thread, not one per image of the batch" {
	for i in $(seq 12); do echo "$D/photo.jpg"; done >photos.txt
	one=$(peak_kb "$MP_BIN/mp-eval" -q -m "$D/w.safetensors" --list photos.txt --threads 1 --batch 1 --probs p1.tsv)
	all=$(peak_kb "$MP_BIN/mp-eval" -q -m "$D/w.safetensors" --list photos.txt --threads 1 --batch 12 --probs p12.tsv)
	# each decoded photo is 12 MB: twelve held at once would add 130 MB
	assert_less "$all" $((one + 40000))
	# the fast backend's matrix products are blocked by the batch's size:
	# the same within 1e-5 (mp-eval(1), --batch), not always in every bit
	assert_less "$(probs_max_diff p1.tsv p12.tsv)" 1e-5
}

@test "a run that prepares each batch after the last holds one batch in memory, not two" {
	for i in $(seq 48); do echo "$D/small.png"; done >small.txt
	# each batch is 24 images of 3 x 400 x 400 floats: 46 MB
	turn=$(MP_EVAL_AHEAD=0 peak_kb "$MP_BIN/mp-eval" -q -m "$D/w.safetensors" --list small.txt \
		--threads 1 --batch 24 --scales 400 --probs p0.tsv)
	ahead=$(MP_EVAL_AHEAD=1 peak_kb "$MP_BIN/mp-eval" -q -m "$D/w.safetensors" --list small.txt \
		--threads 1 --batch 24 --scales 400 --probs p1.tsv)
	assert_less "$turn" $((ahead - 30000))
	cmp p0.tsv p1.tsv
}

@test "--max-pixels: larger images are refused with the file and line named; the limit can be raised" {
	printf '%s\n' "$D/small.png" "$D/huge.png" >huge.txt
	run ev -q -m "$D/w.safetensors" --list huge.txt
	assert_status 1
	assert_equal "$output" "mp-eval: $D/huge.png (huge.txt line 2): 65535x65535 pixels is more than --max-pixels 67108864"
	echo "$D/small.png 3" >small.txt
	run ev -q -m "$D/w.safetensors" --list small.txt --max-pixels 255
	assert_status 1
	assert_equal "$output" "mp-eval: $D/small.png (small.txt line 1): 16x16 pixels is more than --max-pixels 255"
	run ev -q -m "$D/w.safetensors" --list small.txt --max-pixels 256 --probs -
	assert_status 0
	assert_equal "$(cut -f1,2 <<<"$output" | tail -1)" "$(printf '%s\t3' "$D/small.png")"
	run ev -q -m "$D/w.safetensors" --list small.txt --max-pixels 0
	assert_status 2
	assert_equal "$output" 'mp-eval: --max-pixels: "0" is not a number from 1 to 1099511627776'
}

@test "an image file is read up to 1 GiB, as mp-batchwriter reads it" {
	truncate -s 300M big.png
	truncate -s 1025M bigger.png
	echo big.png >big.txt
	run ev -q -m "$D/w.safetensors" --list big.txt
	assert_status 1
	assert_equal "$output" "mp-eval: big.png (big.txt line 1): not a JPEG or PNG file"
	echo bigger.png >big.txt
	run ev -q -m "$D/w.safetensors" --list big.txt
	assert_status 1
	assert_equal "$output" "mp-eval: bigger.png (big.txt line 1): file of 1074790400 bytes is larger than the limit of 1073741824"
}

@test "the list and a DB of the same images fitted with --fit stretch to the scale and stored as PNG give the same output" {
	"$PY" "$MKIMAGES" batch <<-EOF
	make cmyk-jpeg cmyk.jpg 21 13
	make sampled-jpeg s411.jpg 33 17 sample=4x1
	make gray-png gray.png 9 9
	make png16 p16.png 8 8 value=40000
	make interlaced inter.png 11 13
	make gradient wide.png 3000 1
	make noise one.png 1 1
	EOF
	ls ./*.jpg ./*.png >l.txt
	"$MP_BIN/mp-batchwriter" -q --size 20 --fit stretch --encoding png -o l.db l.txt
	ev -q -m "$D/w.safetensors" --scales 20 --crops center --flip --probs db.tsv --submission db.sub l.db
	ev -q -m "$D/w.safetensors" --scales 20 --crops center --flip --probs list.tsv --submission list.sub --list l.txt
	cmp db.tsv list.tsv
	cmp db.sub list.sub
}

@test "an output that is one of the listed images is refused before anything is written" {
	cp "$D/small.png" a.png
	cp "$D/small.png" b.png
	printf 'a.png\n%s/b.png\n' "$PWD" >two.txt
	run ev -q -m "$D/w.safetensors" --list two.txt --submission b.png
	assert_status 2
	assert_equal "$output" "mp-eval: --submission b.png: that is two.txt line 2's image, which it would replace"
	cmp "$D/small.png" b.png
	# through another name of the same file, with the list's root before it
	mkdir imgs && mv a.png imgs/ && ln -s imgs/a.png link.png
	echo a.png >root.txt
	run ev -q -m "$D/w.safetensors" --list root.txt --root imgs --probs link.png
	assert_status 2
	assert_equal "$output" "mp-eval: --probs link.png: that is root.txt line 1's image, which it would replace"
	cmp "$D/small.png" imgs/a.png
	# an output that does not exist yet is fine
	run ev -q -m "$D/w.safetensors" --list two.txt --root imgs --submission new.txt
	assert_status 0
	assert_equal "$(wc -l <new.txt)" 2
}

@test "a path on two lines of the list is scored twice, with a warning naming both lines" {
	cp "$D/small.png" a.png
	cp "$D/small.png" b.png
	printf 'a.png\nb.png\na.png\n' >three.txt
	run --separate-stderr ev -q -m "$D/w.safetensors" --scales 16 --crops center --list three.txt --submission sub.txt
	assert_status 0
	assert_equal "$stderr" "mp-eval: three.txt line 3: a.png is also on line 1; it is scored again"
	assert_equal "$(cut -d' ' -f1 sub.txt | sort | tr '\n' ' ')" "a.png a.png b.png "
}

@test "a list given as the dataset is named as a list, and --list said" {
	printf 'val/00000001.jpg 21\nval/00000002.jpg 3\n' >val.txt
	run --separate-stderr ev -m "$D/w.safetensors" val.txt
	assert_status 1
	assert_equal "$stderr" "mp-eval: val.txt: not a dataset stream (bad magic): an image list, which mp-batchwriter packs into a dataset (mp-eval reads one with --list)"
}

@test "a missing image read without --root says where relative paths are read from; with it, not" {
	mkdir imgs && cp "$D/small.png" imgs/a.png
	echo a.png >l.txt
	run --separate-stderr ev -q -m "$D/w.safetensors" --list l.txt
	assert_status 1
	assert_equal "$stderr" "mp-eval: a.png (l.txt line 1): No such file or directory$NO_ROOT"
	run --separate-stderr ev -q -m "$D/w.safetensors" --list l.txt -r imgs
	assert_status 0
	echo b.png >m.txt
	run --separate-stderr ev -q -m "$D/w.safetensors" --list m.txt -r imgs
	assert_status 1
	assert_equal "$stderr" "mp-eval: imgs/b.png (m.txt line 1): No such file or directory"
}
