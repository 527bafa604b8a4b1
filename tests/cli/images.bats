#!/usr/bin/env bats
# Pixels through mp-batchwriter and back out with mp-inspect --extract:
# storage encodings, resizing and padding, and every decoder path.
#
# "mkimg batch" runs several image commands in one Python process; each
# query prints one line, so a heredoc of queries is checked against the
# expected lines in order.

load helpers

# pack LIST DB OPTIONS...: packs quietly and fails the test on an error.
pack() {
	local list=$1 db=$2
	shift 2
	run --separate-stderr bw -q "$@" -o "$db" "$list"
	assert_status 0
	assert_equal "$stderr" ""
}

# ---- round trips ----------------------------------------------------------

@test "raw storage returns the exact pixels" {
	mkimg make noise a.png 16 16 seed=11
	echo a.png >list.txt
	pack list.txt db --size 16 --encoding raw
	run inspect --list db
	assert_equal "$(sed -n 2p <<<"$output" | cut -f3-7)" "$(printf -- '-1\t16\t16\traw\t768')"
	inspect --extract 0 -o out.png db
	assert_equal "$(mkimg compare a.png out.png)" "0 0.000"
}

@test "png storage returns the exact pixels" {
	mkimg make noise a.jpg 16 16 seed=12 # a JPEG source, stored as PNG
	echo a.jpg >list.txt
	pack list.txt db --size 16 --encoding png
	assert_equal "$(inspect --list db | sed -n 2p | cut -f6)" "png"
	inspect --extract 0 -o out.png db
	# libjpeg-turbo decodes the source as PIL does: not one level apart.
	assert_equal "$(mkimg compare a.jpg out.png)" "0 0.000"
}

@test "jpeg storage returns the pixels within a small error" {
	mkimg make gradient a.png 32 32
	echo a.png >list.txt
	pack list.txt db --size 32 --encoding jpeg --quality 95
	pack list.txt low --size 32 --encoding jpeg --quality 20
	assert_equal "$(inspect --list db | sed -n 2p | cut -f6)" "jpeg"
	inspect --extract 0 -o out.png db
	read -r max mean < <(mkimg compare a.png out.png)
	assert_less "$mean" 3
	assert_less "$max" 16
	# A lower quality gives a smaller payload.
	hi=$(inspect --list db | sed -n 2p | cut -f7)
	lo=$(inspect --list low | sed -n 2p | cut -f7)
	assert_less "$lo" "$hi"
}

@test "keep stores the original bytes of an image already at --size" {
	mkimg batch <<-'EOF'
		make noise a.jpg 16 16 seed=1
		make noise b.png 16 16 seed=2
	EOF
	printf 'a.jpg 0\nb.png 1\n' >list.txt
	pack list.txt db --size 16 --encoding keep
	run inspect --list db
	assert_status 0
	read -r abytes acrc < <(mkimg crc a.jpg)
	read -r bbytes bcrc < <(mkimg crc b.png)
	assert_equal "$(sed -n 2p <<<"$output")" "$(printf '0\ta.jpg\t0\t16\t16\tjpeg\t%s\t%s' "$abytes" "$acrc")"
	assert_equal "$(sed -n 3p <<<"$output")" "$(printf '1\tb.png\t1\t16\t16\tpng\t%s\t%s' "$bbytes" "$bcrc")"
}

@test "keep re-encodes an image that had to change, in its own format" {
	mkimg batch <<-'EOF'
		make noise a.jpg 20 20 seed=1
		make noise b.png 20 20 seed=2
	EOF
	printf 'a.jpg\nb.png\n' >list.txt
	pack list.txt db --size 16
	run inspect --list db
	read -r abytes acrc < <(mkimg crc a.jpg)
	assert_equal "$(sed -n 2p <<<"$output" | cut -f4-6)" "$(printf '16\t16\tjpeg')"
	assert_equal "$(sed -n 3p <<<"$output" | cut -f4-6)" "$(printf '16\t16\tpng')"
	assert_not_contains "$(sed -n 2p <<<"$output")" "$acrc"
	run inspect --verify db
	assert_status 0
}

# ---- resize and fit -----------------------------------------------------

@test "--fit pad --pad-fill zero letterboxes a wide image" {
	mkimg make solid a.png 20 10 color=200,100,50
	echo a.png >list.txt
	pack list.txt db --size 16 --fit pad --pad-fill zero --encoding raw
	inspect --extract 0 -o out.png db
	# 20x10 -> 16x8, centred: rows 0-3 and 12-15 are padding.
	run mkimg batch <<-'EOF'
		info out.png
		colors out.png 0 0 16 4
		colors out.png 0 4 16 12
		colors out.png 0 12 16 16
	EOF
	assert_equal "$output" "$(printf '16 16 RGB\n0,0,0\n200,100,50\n0,0,0')"
	assert_equal "$(json_get <(inspect --json db) 'd["meta"]["fit"], d["meta"]["pad_fill"], d["meta"]["width"]')" "('pad', 'zero', 16)"
}

@test "--fit pad puts the bars at the sides of a tall image" {
	mkimg make solid a.png 10 20 color=10,20,30
	echo a.png >list.txt
	pack list.txt db --size 16 --fit pad --pad-fill zero --encoding raw
	inspect --extract 0 -o out.png db
	run mkimg batch <<-'EOF'
		colors out.png 0 0 4 16
		colors out.png 4 0 12 16
		colors out.png 12 0 16 16
	EOF
	assert_equal "$output" "$(printf '0,0,0\n10,20,30\n0,0,0')"
}

@test "--pad-fill mean fills with the image mean, edge repeats the border rows" {
	mkimg batch <<-'EOF'
		make solid s.png 20 10 color=200,100,50
		make hbands t.png 20 10 colors=255,0,0/0,0,255 heights=5,5
	EOF
	echo s.png >s.txt
	echo t.png >t.txt
	pack s.txt mean --size 16 --fit pad --pad-fill mean --encoding raw
	pack t.txt edge --size 16 --fit pad --pad-fill edge --encoding raw
	pack t.txt zero --size 16 --fit pad --pad-fill zero --encoding raw
	inspect --extract 0 -o mean.png mean
	inspect --extract 0 -o edge.png edge
	inspect --extract 0 -o zero.png zero
	run mkimg batch <<-'EOF'
		colors mean.png 0 0 16 16
		colors edge.png 0 0 16 5
		colors edge.png 0 11 16 16
		colors zero.png 0 0 16 4
		colors zero.png 0 4 16 5
	EOF
	assert_equal "$output" "$(printf '200,100,50\n255,0,0\n0,0,255\n0,0,0\n255,0,0')"
}

@test "--pad 2 adds a border of zero, edge or mean pixels around the image" {
	mkimg batch <<-'EOF'
		make edges a.png 16 16
		pad a.png 2 zero want-zero.png
		pad a.png 2 edge want-edge.png
		pad a.png 2 mean want-mean.png
	EOF
	echo a.png >list.txt
	for fill in zero edge mean; do
		pack list.txt "db-$fill" --size 16 --pad 2 --pad-fill "$fill" --encoding raw
		inspect --extract 0 -o "out-$fill.png" "db-$fill"
	done
	run mkimg batch <<-'EOF'
		info out-zero.png
		compare out-zero.png want-zero.png
		compare out-edge.png want-edge.png
		compare out-mean.png want-mean.png
		pixel out-edge.png 0 0
		pixel out-edge.png 19 19
		colors out-zero.png 0 0 20 2
	EOF
	# The corners of the edge fill repeat the corner pixels.
	assert_equal "$output" "$(printf '20 20 RGB\n0 0.000\n0 0.000\n0 0.000\n0 255 0\n255 255 0\n0,0,0')"
	assert_equal "$(json_get <(inspect --json db-edge) 'd["meta"]["size"], d["meta"]["padding"], d["meta"]["height"], d["sizes"]')" \
		"(16, 2, 20, [{'width': 20, 'height': 20, 'count': 1}])"
}

@test "--fit crop keeps the centre" {
	# 40x10 with 15 red, 10 green, 15 blue columns: the 10x10 centre is green.
	mkimg make bands a.png 40 10 colors=255,0,0/0,255,0/0,0,255 widths=15,10,15
	echo a.png >list.txt
	pack list.txt db --size 10 --fit crop --encoding raw
	pack list.txt padded --size 40 --fit pad --pad-fill zero --encoding raw
	inspect --extract 0 -o out.png db
	inspect --extract 0 -o padded.png padded
	run mkimg batch <<-'EOF'
		info out.png
		colors out.png 0 0 10 10
		colors padded.png 0 15 40 25
		colors padded.png 0 0 40 15
	EOF
	# Padded, the same image keeps all three colours.
	assert_equal "$output" "$(printf '10 10 RGB\n0,255,0\n0,0,255 0,255,0 255,0,0\n0,0,0')"
}

@test "--fit crop of a very wide image computes only the square it keeps" {
	# 60000x1 scaled to a short side of 128 is 7680000x128 (2.9 GB of
	# pixels); the 128x128 kept are 48 KiB. Red columns in the middle.
	mkimg make bands a.png 60000 1 colors=0,0,255/255,0,0/0,0,255 widths=29990,20,29990
	echo a.png >list.txt
	# (a stream: the LMDB map would not fit in 512 MiB)
	run --separate-stderr limit_memory 524288 bash -c 'exec "$1" -q -j 1 --fit crop --size 128 --encoding raw "$2" >out.stream' \
		sh "$MP_BIN/mp-batchwriter" list.txt
	assert_status 0
	assert_equal "$stderr" ""
	inspect --extract 0 -o out.png out.stream
	run mkimg batch <<-'EOF'
		info out.png
		colors out.png 0 0 128 128
	EOF
	assert_equal "$output" "$(printf '128 128 RGB\n255,0,0')"
}

@test "--fit stretch fills the square and keeps a solid colour" {
	mkimg batch <<-'EOF'
		make solid a.png 20 10 color=30,60,90
		make bands b.png 20 10 colors=255,0,0/0,0,255 widths=10,10
	EOF
	printf 'a.png\nb.png\n' >list.txt
	pack list.txt db --size 16 --fit stretch --encoding raw
	inspect --extract 0 -o a-out.png db
	inspect --extract 1 -o b-out.png db
	# Vertical bands stay vertical bands over the whole height.
	run mkimg batch <<-'EOF'
		info a-out.png
		colors a-out.png 0 0 16 16
		colors b-out.png 0 0 6 16
		colors b-out.png 10 0 16 16
	EOF
	assert_equal "$output" "$(printf '16 16 RGB\n30,60,90\n255,0,0\n0,0,255')"
}

@test "the mean in the meta is the mean of the stored pixels" {
	mkimg batch <<-'EOF'
		make solid a.png 8 8 color=10,20,30
		make solid b.png 8 8 color=30,60,91
	EOF
	printf 'a.png\nb.png\n' >list.txt
	pack list.txt db --size 8 --encoding raw
	assert_equal "$(json_get <(inspect --json db) '[float(x) for x in d["meta"]["mean"]]')" "[20.0, 40.0, 60.5]"
	assert_equal "$(inspect db | grep '^mean')" "mean (RGB):   20.0000 40.0000 60.5000"
}

# ---- decoders -----------------------------------------------------------

# pack_each SIZE FILE...: packs each FILE alone, raw at SIZE, and extracts
# it to FILE.out.png.
pack_each() {
	local size=$1 f
	shift
	for f in "$@"; do
		echo "$f" >"$f.txt"
		pack "$f.txt" "$f.db" --size "$size" --encoding raw
		inspect --extract 0 -o "$f.out.png" "$f.db"
	done
}

@test "grayscale JPEG decodes to equal RGB channels" {
	mkimg make gray-jpeg g.jpg 16 16 value=90
	pack_each 16 g.jpg
	assert_equal "$(mkimg colors g.jpg.out.png 0 0 16 16)" "90,90,90"
}

@test "CMYK JPEG decodes to RGB" {
	mkimg batch <<-'EOF'
		make cmyk-jpeg red.jpg 16 16 cmyk=0,255,255,0
		make cmyk-jpeg cyan.jpg 16 16 cmyk=255,0,0,0
		make cmyk-jpeg blue.jpg 16 16 cmyk=255,255,0,0
		make cmyk-jpeg gray.jpg 16 16 cmyk=0,0,0,128
		make cmyk-jpeg mix.jpg 16 16 cmyk=40,80,120,30
		make solid want.png 16 16 color=190,154,119
	EOF
	pack_each 16 red.jpg cyan.jpg blue.jpg gray.jpg mix.jpg
	run mkimg batch <<-'EOF'
		colors red.jpg.out.png 0 0 16 16
		colors cyan.jpg.out.png 0 0 16 16
		colors blue.jpg.out.png 0 0 16 16
		colors gray.jpg.out.png 0 0 16 16
		compare mix.jpg.out.png want.png
	EOF
	assert_equal "$(head -n 4 <<<"$output")" "$(printf '255,0,0\n0,255,255\n0,0,255\n127,127,127')"
	# (255-C)(255-K)/255 per channel: 189.7, 154.4, 119.1
	read -r max mean <<<"$(tail -n 1 <<<"$output")"
	assert_less "$max" 3
}

@test "JPEGs of every chroma sampling decode as PIL decodes them" {
	command -v cjpeg >/dev/null || skip "cjpeg (libjpeg-turbo-progs) is not installed"
	# 4:2:2, 4:4:0 and 4:1:1 TurboJPEG names; 4:1:0, 1x4, 3x1 and a
	# different factor per chroma component it does not. 45 is no
	# multiple of any MCU.
	local samples=(2x1 1x2 4x1 4x2 1x4 3x1 2x2,1x2,1x1 1x1,2x2,2x2) i files=()
	for i in "${!samples[@]}"; do
		files+=("s$i.jpg")
		echo "make sampled-jpeg s$i.jpg 45 45 sample=${samples[i]}" >>make.txt
	done
	mkimg batch <make.txt
	assert_equal "${#files[@]}" 8
	pack_each 45 "${files[@]}"
	for f in "${files[@]}"; do
		assert_equal "$f $(mkimg compare "$f" "$f.out.png")" "$f 0 0.000"
	done
}

@test "the EXIF orientation is not applied; data after the JPEG end is ignored" {
	mkimg make exif-jpeg turned.jpg 24 16 orientation=6
	cp turned.jpg tail.jpg
	printf 'trailing bytes\0\0\0' >>tail.jpg
	pack_each 24 turned.jpg tail.jpg
	assert_equal "$(mkimg compare turned.jpg.out.png tail.jpg.out.png)" "0 0.000"
	# 24x16 as stored, so the bars of --fit pad are above and below, and
	# the pixels are those of PIL's Image.open(), which does not turn
	"$PY" -c 'import sys; from PIL import Image
a = Image.open(sys.argv[1])
assert a.getexif()[0x0112] == 6 and a.size == (24, 16)
b = Image.open(sys.argv[2]).convert("RGB")
assert len(set(b.crop((0, 0, 24, 4)).getdata())) == 1
assert list(a.convert("RGB").getdata()) == list(b.crop((0, 4, 24, 20)).getdata())' turned.jpg turned.jpg.out.png
}

@test "stray bytes before the JPEG end marker are read past, whole pixels; a cut scan is still refused" {
	# baseline and progressive: the library reports stray bytes only after
	# the last scan, so the pixels are those of the intact file
	"$PY" -c 'import sys; import numpy as np; from PIL import Image
rng = np.random.default_rng(4)
img = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
for name, prog in (("base", False), ("prog", True)):
    img.save(name + ".jpg", quality=90, progressive=prog)
    b = open(name + ".jpg", "rb").read()
    assert b.endswith(b"\xff\xd9")
    open(name + "-stray.jpg", "wb").write(b[:-2] + b"\x00\x01\x02\x03\x04" + b[-2:])
    # half the scan, then the same stray bytes and the end marker
    open(name + "-cut.jpg", "wb").write(b[:len(b) // 2] + b"\x00\x01\x02\x03\x04" + b[-2:])'
	pack_each 48 base.jpg base-stray.jpg prog.jpg prog-stray.jpg
	assert_equal "$(mkimg compare base.jpg.out.png base-stray.jpg.out.png)" "0 0.000"
	assert_equal "$(mkimg compare prog.jpg.out.png prog-stray.jpg.out.png)" "0 0.000"
	for f in base-cut.jpg prog-cut.jpg; do
		echo "$f" >"$f.txt"
		run --separate-stderr "$MP_BIN/mp-batchwriter" -q --size 48 -o "$f.db" "$f.txt"
		assert_status 1
		assert_contains "$stderr" "$f ($f.txt line 1): bad JPEG data: Corrupt JPEG data: "
	done
}

@test "grayscale and gray+alpha PNG decode to equal RGB channels" {
	mkimg batch <<-'EOF'
		make gray-png g.png 16 16 value=77
		make la-png la.png 16 16 value=150
	EOF
	pack_each 16 g.png la.png
	run mkimg batch <<-'EOF'
		colors g.png.out.png 0 0 16 16
		colors la.png.out.png 0 0 16 16
	EOF
	assert_equal "$output" "$(printf '77,77,77\n150,150,150')"
}

@test "1-bit PNG decodes to black and white" {
	mkimg make bit-png b.png 16 16
	pack_each 16 b.png
	run mkimg batch <<-'EOF'
		pnginfo b.png
		colors b.png.out.png 0 0 16 16
		pixel b.png.out.png 0 0
		pixel b.png.out.png 1 0
	EOF
	assert_equal "$output" "$(printf '1 0 0\n0,0,0 255,255,255\n255 255 255\n0 0 0')"
}

@test "palette PNG decodes to its colours" {
	mkimg make palette-png p.png 16 16 colors=255,0,0/0,0,255 widths=8,8
	pack_each 16 p.png
	run mkimg batch <<-'EOF'
		pnginfo p.png
		colors p.png.out.png 0 0 8 16
		colors p.png.out.png 8 0 16 16
	EOF
	assert_equal "$(cut -d' ' -f2 <<<"$(head -n 1 <<<"$output")")" "3" # colour type 3
	assert_equal "$(tail -n 2 <<<"$output")" "$(printf '255,0,0\n0,0,255')"
}

@test "16-bit PNG decodes to the high byte" {
	mkimg batch <<-'EOF'
		make png16 a.png 16 16 value=25700
		make png16 b.png 16 16 value=65535
	EOF
	pack_each 16 a.png b.png
	run mkimg batch <<-'EOF'
		pnginfo a.png
		colors a.png.out.png 0 0 16 16
		colors b.png.out.png 0 0 16 16
	EOF
	assert_equal "$output" "$(printf '16 0 0\n100,100,100\n255,255,255')"
}

@test "RGBA PNG drops alpha and keeps the colour" {
	mkimg make rgba-png a.png 16 16 color=10,200,30 alpha=100
	pack_each 16 a.png
	run mkimg batch <<-'EOF'
		pnginfo a.png
		colors a.png.out.png 0 0 16 16
	EOF
	assert_equal "$output" "$(printf '8 6 0\n10,200,30')"
}

@test "interlaced PNG decodes to the same pixels" {
	mkimg batch <<-'EOF'
		make interlaced a.png 16 16 seed=5
		make interlaced b.png 11 11 seed=6
	EOF
	pack_each 16 a.png
	pack_each 11 b.png
	run mkimg batch <<-'EOF'
		pnginfo a.png
		compare a.png a.png.out.png
		compare b.png b.png.out.png
	EOF
	assert_equal "$output" "$(printf '8 2 1\n0 0.000\n0 0.000')"
}
