/* Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, 2015) for the
 * fast backend's inference convolutions (conv_infer.c) and training's
 * forward passes and input gradients (conv_gemm.c): a 3x3, stride-1,
 * pad-1 convolution as
 *
 *   y tile (4x4) = A^T [sum_c (G g_kc G^T) (.) (B^T d_c B)] A
 *
 * where d_c is the tile's 6x6 input patch of channel c and (.) multiplies
 * element-wise. The sum over channels is 36 matrix products (one per
 * element p of the 6x6 transformed tile) of the transformed weights
 * u[p] (K x C) by the transformed inputs v[p] (C x tiles): 36 C K
 * multiply-adds per tile instead of 144 C K, 4 times fewer. The
 * transforms have small integer coefficients (G: quarters, sixths), so
 * the result stays within a few 1e-6 relative of the direct sum.
 *
 * Same bits for any thread count: the tiles are taken in blocks of whole
 * tile rows whose size depends only on the shapes, and in each block
 * every channel's transform, every product and every output channel's
 * transform is done by one thread with the order of every sum fixed;
 * which thread takes which changes nothing. */
#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "cpu.h"

/* Transformed inputs and products of one block: about this many bytes,
 * so that they stay in the threads' L2 caches between the steps. */
#define BLOCK_BYTES (3u << 20)

/* The portable transforms' loops vectorize best for the machine they run on.
 * Not under ThreadSanitizer: the clones' resolver runs while the program is
 * loaded, before the sanitizer's runtime is set up, and its instrumented
 * entry crashes every program that links this file. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* u[p][k][c] = scale[k] (G g_kc G^T)[p], p = 6 a + b, with
 * G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
 *      1/24 -1/12 1/6; 0 0 1], in double before the one rounding. */
static const double G[6][3] = {
	{1.0 / 4, 0, 0},		 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
	{-1.0 / 6, 1.0 / 6, -1.0 / 6},	 {1.0 / 24, 1.0 / 12, 1.0 / 6},
	{1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1},
};

/* One output channel: w its C x 3 x 3 weights, u its row of u[0][k]
 * (the other elements kc floats apart); 16 input channels at a time, so
 * that the sums vectorize. */
VECTOR_CLONES
static void weights_row(const float *w, double scale, int C, size_t kc, float *u)
{
	enum { B = 16 };
	for (int c0 = 0; c0 < C; c0 += B) {
		const int n = C - c0 < B ? C - c0 : B;
		double g[9][B], t[6][3][B]; /* g, then G g */
		for (int i = 0; i < 9; i++)
			for (int c = 0; c < n; c++)
				g[i][c] = w[(size_t)(c0 + c) * 9 + i];
		for (int a = 0; a < 6; a++)
			for (int j = 0; j < 3; j++)
#pragma omp simd
				for (int c = 0; c < n; c++)
					t[a][j][c] = G[a][0] * g[j][c] + G[a][1] * g[3 + j][c] +
						     G[a][2] * g[6 + j][c];
		for (int a = 0; a < 6; a++)
			for (int b = 0; b < 6; b++) {
				float *ub = u + (size_t)(6 * a + b) * kc + c0;
#pragma omp simd
				for (int c = 0; c < n; c++)
					ub[c] = (float)((t[a][0][c] * G[b][0] + t[a][1][c] * G[b][1] +
							 t[a][2][c] * G[b][2]) * scale);
			}
	}
}

void mp_cpu_winograd_weights(const float *w, const float *scale, int K, int C, float *u,
			     int threads)
{
	const size_t kc = (size_t)K * C;
#pragma omp parallel for num_threads(threads) schedule(static) if (MP_CPU_WORTH_THREADS(kc))
	for (int k = 0; k < K; k++)
		weights_row(w + (size_t)k * C * 9, scale ? scale[k] : 1.0, C, kc, u + (size_t)k * C);
}

typedef struct {
	int N, C, H, W, K;
	int th, tw;	 /* tile rows and columns of an image */
	int rows;	 /* tile rows per block */
	int blocks;	 /* blocks over all N th tile rows */
	size_t cap;	 /* tiles a block holds at most: rows tw */
	size_t ld;	 /* floats between the rows v[p][c] (and m[p][k]): cap
			  * rounded up to whole cache lines */
} wino_geom;

/* 36 th tw products per (k, c) instead of 9 H W: worth it when at most
 * half (the planes of the reference network all are; a 5x5 one is not). */
int mp_cpu_winograd_pays(int H, int W)
{
	const long long th = (H + 3) / 4, tw = (W + 3) / 4;
	return 36 * th * tw * 2 <= 9LL * H * W;
}

/* In place on six rows of n floats, 'stride' apart: z = B^T z, with
 * B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
 *        0 2 -1 -2 1 0; 0 4 0 -5 0 1]. */
VECTOR_CLONES
static void input_step(float *z, size_t stride, int n)
{
	float *restrict z0 = z, *restrict z1 = z0 + stride, *restrict z2 = z1 + stride,
		       *restrict z3 = z2 + stride, *restrict z4 = z3 + stride,
		       *restrict z5 = z4 + stride;
#pragma omp simd
	for (int i = 0; i < n; i++) {
		const float d0 = z0[i], d1 = z1[i], d2 = z2[i], d3 = z3[i], d4 = z4[i], d5 = z5[i];
		z0[i] = 4 * d0 - 5 * d2 + d4;
		z1[i] = -4 * (d1 + d2) + d3 + d4;
		z2[i] = 4 * (d1 - d2) - d3 + d4;
		z3[i] = -2 * (d1 - d3) - d2 + d4;
		z4[i] = 2 * (d1 - d3) - d2 + d4;
		z5[i] = 4 * d1 - 5 * d3 + d5;
	}
}

/* In place on six rows of n floats, 'stride' apart: the first four become
 * A^T z, with A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. */
VECTOR_CLONES
static void output_step(float *z, size_t stride, int n)
{
	float *restrict z0 = z, *restrict z1 = z0 + stride, *restrict z2 = z1 + stride,
		       *restrict z3 = z2 + stride, *restrict z4 = z3 + stride,
		       *restrict z5 = z4 + stride;
#pragma omp simd
	for (int i = 0; i < n; i++) {
		const float p12 = z1[i] + z2[i], n12 = z1[i] - z2[i];
		const float p34 = z3[i] + z4[i], n34 = z3[i] - z4[i];
		const float m0 = z0[i], m5 = z5[i];
		z0[i] = m0 + p12 + p34;
		z1[i] = n12 + 2 * n34;
		z2[i] = p12 + 4 * p34;
		z3[i] = n12 + 8 * n34 + m5;
	}
}

/* ---- the portable transforms ----
 *
 * Column b of tile tx is image column 4 tx + b - 1 (zero outside the
 * row). A tile row's outputs go through a line, line[4 tx + j] = output
 * column j of tile tx (4 tw floats, rounded up to whole cache lines). */

static int chunks_of(int n)
{
	return (n + 15) / 16;
}

static size_t line_floats(int tw)
{
	return 64 * (size_t)chunks_of(tw);
}

/* The transformed input of channel c for the tile rows r0..r1-1 (global:
 * r = n th + ty): v[p][c][t], t the tile's index in the block, p = 6 a + b
 * the element of B^T d B. Each tile's 6x6 patch (image rows
 * 4 ty - 1 .. 4 ty + 4, columns 4 tx - 1 .. 4 tx + 4, zero outside) is
 * first gathered into v, then transformed in place over all the block's
 * tiles at once. */
static void transform_input(const wino_geom *g, const float *x, int c, int r0, int r1,
			    float *v)
{
	const int H = g->H, W = g->W, tw = g->tw, tiles = (r1 - r0) * tw;
	const size_t ct = (size_t)g->C * g->ld;
	float *vc = v + (size_t)c * g->ld;
	for (int r = r0; r < r1; r++) {
		const int n = r / g->th, ty = r % g->th;
		const float *xc = x + ((size_t)n * g->C + c) * H * W;
		float *vt = vc + (size_t)(r - r0) * tw;
		for (int a = 0; a < 6; a++) {
			const int iy = 4 * ty - 1 + a;
			for (int b = 0; b < 6; b++) {
				float *vb = vt + (size_t)(6 * a + b) * ct;
				for (int tx = 0; tx < tw; tx++) {
					const int ix = 4 * tx + b - 1;
					vb[tx] = iy >= 0 && iy < H && ix >= 0 && ix < W
							 ? xc[(size_t)iy * W + ix] : 0.0f;
				}
			}
		}
	}
	/* B^T over the patch rows, then B over its columns */
	for (int b = 0; b < 6; b++)
		input_step(vc + (size_t)b * ct, 6 * ct, tiles);
	for (int a = 0; a < 6; a++)
		input_step(vc + (size_t)(6 * a) * ct, ct, tiles);
}

/* In place, output channel k of the block: A^T M A, o[i][j] at p = 6 i + j. */
static void output_transform(const wino_geom *g, float *m, int k, int tiles)
{
	const size_t kt = (size_t)g->K * g->ld;
	float *mk = m + (size_t)k * g->ld;
	/* A^T over the rows (rows 0-3 of each column b), then A over the
	 * columns of those rows */
	for (int b = 0; b < 6; b++)
		output_step(mk + (size_t)b * kt, 6 * kt, tiles);
	for (int i = 0; i < 4; i++)
		output_step(mk + (size_t)(6 * i) * kt, kt, tiles);
}

/* line[4 tx + j] = o[j * kt + tx], j = 0..3, tx < tw */
static void scatter_tiles_plain(const float *o, size_t kt, int tw, float *line)
{
	for (int j = 0; j < 4; j++) {
		const float *oj = o + (size_t)j * kt;
		for (int tx = 0; tx < tw; tx++)
			line[4 * tx + j] = oj[tx];
	}
}

/* ---- the AVX-512 transforms ----
 *
 * The same transforms, 16 tiles at a time, the 6x6 transform done in
 * registers and every transformed value stored once. A plane at least 8
 * tiles wide is read row by row, by loads and permutes; a narrower one by
 * masked gathers at per-block offsets, so that the 16 tiles may span tile
 * rows and images. The output transform likewise reads each product once,
 * and each output row is interleaved, finished and stored in registers. */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512 1

/* Per block: each tile's offset off[t] = n C H W + (4 ty - 1) W + 4 tx - 1
 * (its patch's first element in channel 0), and for each chunk of 16
 * tiles which of them have patch row a (row_ok[a][chunk]) and patch
 * column b (col_ok[b][chunk]) inside the image. */
typedef struct {
	int32_t *off;
	uint32_t *row_ok, *col_ok;
} tile_table;

static size_t table_floats(size_t cap)
{
	return cap + 16 + 12 * (size_t)chunks_of((int)cap);
}

static void table_fill(const wino_geom *g, int r0, int r1, tile_table *tt)
{
	const int tw = g->tw, tiles = (r1 - r0) * tw, chunks = chunks_of(tiles);
	memset(tt->row_ok, 0, 6 * (size_t)chunks * sizeof *tt->row_ok);
	memset(tt->col_ok, 0, 6 * (size_t)chunks * sizeof *tt->col_ok);
	for (int t = 0; t < tiles; t++) {
		const int r = r0 + t / tw, tx = t % tw, n = r / g->th, ty = r % g->th;
		tt->off[t] = (int32_t)((long long)n * g->C * g->H * g->W +
				       (long long)(4 * ty - 1) * g->W + 4 * tx - 1);
		const uint32_t bit = 1u << (t % 16);
		for (int a = 0; a < 6; a++) {
			const int iy = 4 * ty - 1 + a, ix = 4 * tx - 1 + a;
			if (iy >= 0 && iy < g->H)
				tt->row_ok[a * chunks + t / 16] |= bit;
			if (ix >= 0 && ix < g->W)
				tt->col_ok[a * chunks + t / 16] |= bit;
		}
	}
	for (int t = tiles; t < 16 * chunks; t++)
		tt->off[t] = 0;
}

/* z = B^T d over six vectors */
__attribute__((target("avx512f"))) static inline void bt6(const __m512 d[6], __m512 z[6])
{
	const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4),
		     five = _mm512_set1_ps(5);
	const __m512 d12 = _mm512_add_ps(d[1], d[2]), e12 = _mm512_sub_ps(d[1], d[2]);
	const __m512 e13 = _mm512_sub_ps(d[1], d[3]);
	const __m512 d4m2 = _mm512_sub_ps(d[4], d[2]), d4m3 = _mm512_sub_ps(d[4], d[3]);
	z[0] = _mm512_fnmadd_ps(five, d[2], _mm512_fmadd_ps(four, d[0], d[4]));
	z[1] = _mm512_fnmadd_ps(four, d12, _mm512_add_ps(d[3], d[4]));
	z[2] = _mm512_fmadd_ps(four, e12, d4m3);
	z[3] = _mm512_fnmadd_ps(two, e13, d4m2);
	z[4] = _mm512_fmadd_ps(two, e13, d4m2);
	z[5] = _mm512_fnmadd_ps(five, d[3], _mm512_fmadd_ps(four, d[1], d[5]));
}

/* o = A^T z over six vectors (four results) */
__attribute__((target("avx512f"))) static inline void at6(const __m512 z[6], __m512 o[4])
{
	const __m512 p12 = _mm512_add_ps(z[1], z[2]), n12 = _mm512_sub_ps(z[1], z[2]);
	const __m512 p34 = _mm512_add_ps(z[3], z[4]), n34 = _mm512_sub_ps(z[3], z[4]);
	o[0] = _mm512_add_ps(_mm512_add_ps(z[0], p12), p34);
	o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2), n34, n12);
	o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4), p34, p12);
	o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8), n34, n12), z[5]);
}

__attribute__((target("avx512f"))) static void transform_input_avx512(
	const wino_geom *g, const float *x, int c, int tiles, const tile_table *tt, float *v)
{
	const size_t ct = (size_t)g->C * g->ld;
	const int chunks = chunks_of(tiles);
	const float *xc = x + (size_t)c * g->H * g->W;
	float *vc = v + (size_t)c * g->ld;
	for (int ch = 0; ch < chunks; ch++) {
		const int t0 = 16 * ch;
		const __mmask16 live = tiles - t0 >= 16 ? 0xffff : (__mmask16)((1u << (tiles - t0)) - 1);
		const __m512i base = _mm512_loadu_si512(tt->off + t0);
		__m512 s[6][6]; /* B^T d: s[a][b] */
		for (int b = 0; b < 6; b++) {
			__m512 d[6], z[6];
			for (int a = 0; a < 6; a++) {
				const __mmask16 m = (__mmask16)(tt->row_ok[a * chunks + ch] &
								tt->col_ok[b * chunks + ch]);
				const __m512i at = _mm512_add_epi32(base, _mm512_set1_epi32(a * g->W + b));
				d[a] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, at, xc, 4);
			}
			bt6(d, z);
			for (int a = 0; a < 6; a++)
				s[a][b] = z[a];
		}
		for (int a = 0; a < 6; a++) {
			__m512 z[6];
			bt6(s[a], z);
			for (int b = 0; b < 6; b++)
				_mm512_mask_storeu_ps(vc + (size_t)(6 * a + b) * ct + t0, live, z[b]);
		}
	}
}

/* Lanes i of a 16-float vector with 0 <= at + i < n. */
static inline __mmask16 lanes_inside(int at, int n)
{
	const int lo = at < 0 ? -at : 0, hi = n - at < 16 ? n - at : 16;
	if (hi <= lo)
		return 0;
	return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/* Elements q, q + 4, ..., q + 60 of the 64 floats r[0..3]. */
__attribute__((target("avx512f"))) static inline __m512 every_fourth(const __m512 r[4], int q)
{
	const __m512i idx = _mm512_add_epi32(
		_mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28),
		_mm512_set1_epi32(q));
	const __m512 lo = _mm512_permutex2var_ps(r[0], idx, r[1]);
	const __m512 hi = _mm512_permutex2var_ps(r[2], idx, r[3]);
	return _mm512_shuffle_f32x4(lo, hi, 0x44);
}

/* For planes at least 8 tiles wide: 16 tiles of one tile row at a time,
 * each patch row read with plain (masked) loads and split into the six
 * columns by permutes, cheaper than gathers. */
__attribute__((target("avx512f"))) static void transform_input_rows_avx512(
	const wino_geom *g, const float *x, int c, int r0, int r1, float *v)
{
	const int H = g->H, W = g->W, tw = g->tw;
	const size_t ct = (size_t)g->C * g->ld;
	float *vc = v + (size_t)c * g->ld;
	for (int r = r0; r < r1; r++) {
		const int n = r / g->th, ty = r % g->th;
		const float *xc = x + ((size_t)n * g->C + c) * H * W;
		/* ask for the next tile row's four new image rows now: the
		 * hardware does not guess the jumps between planes in time */
		const int rn = r + 1 < r1 ? r + 1 : r0, cn = r + 1 < r1 ? c : c + 1;
		if (cn < g->C) {
			const int nn = rn / g->th, tyn = rn % g->th;
			const float *xn = x + ((size_t)nn * g->C + cn) * H * W;
			for (int iy = (rn == r0 ? 4 * tyn - 1 : 4 * tyn + 1); iy < 4 * tyn + 5; iy++)
				if (iy >= 0 && iy < H)
					for (int at = 0; at < W; at += 16)
						_mm_prefetch((const char *)(xn + (size_t)iy * W + at),
							     _MM_HINT_T0);
		}
		for (int tx0 = 0; tx0 < tw; tx0 += 16) {
			const __mmask16 live = tw - tx0 >= 16 ? 0xffff
							      : (__mmask16)((1u << (tw - tx0)) - 1);
			__m512 d[6][6]; /* d[b][a]: patch element (a, b) of the 16 tiles */
			for (int a = 0; a < 6; a++) {
				const int iy = 4 * ty - 1 + a;
				if (iy < 0 || iy >= H) {
					for (int b = 0; b < 6; b++)
						d[b][a] = _mm512_setzero_ps();
					continue;
				}
				/* the 80 floats from column 4 tx0 - 1 on, and the same
				 * four tiles' columns later */
				const float *row = xc + (size_t)iy * W;
				__m512 w[5], later[4];
				for (int i = 0; i < 5; i++) {
					const int at = 4 * tx0 - 1 + 16 * i;
					w[i] = _mm512_maskz_loadu_ps(lanes_inside(at, W), row + at);
				}
				for (int i = 0; i < 4; i++)
					later[i] = _mm512_castsi512_ps(_mm512_alignr_epi32(
						_mm512_castps_si512(w[i + 1]), _mm512_castps_si512(w[i]), 4));
				for (int b = 0; b < 4; b++)
					d[b][a] = every_fourth(w, b);
				d[4][a] = every_fourth(later, 0);
				d[5][a] = every_fourth(later, 1);
			}
			__m512 s[6][6]; /* B^T d: s[a][b] */
			for (int b = 0; b < 6; b++) {
				__m512 z[6];
				bt6(d[b], z);
				for (int a = 0; a < 6; a++)
					s[a][b] = z[a];
			}
			float *vt = vc + (size_t)(r - r0) * tw + tx0;
			for (int a = 0; a < 6; a++) {
				__m512 z[6];
				bt6(s[a], z);
				for (int b = 0; b < 6; b++)
					_mm512_mask_storeu_ps(vt + (size_t)(6 * a + b) * ct, live, z[b]);
			}
		}
	}
}

__attribute__((target("avx512f"))) static void output_transform_avx512(const wino_geom *g,
									float *m, int k, int tiles)
{
	const size_t kt = (size_t)g->K * g->ld;
	float *mk = m + (size_t)k * g->ld;
	for (int t0 = 0; t0 < tiles; t0 += 16) {
		const __mmask16 live = tiles - t0 >= 16 ? 0xffff : (__mmask16)((1u << (tiles - t0)) - 1);
		__m512 s[4][6]; /* A^T M: s[i][b] */
		for (int b = 0; b < 6; b++) {
			__m512 z[6], o[4];
			for (int a = 0; a < 6; a++)
				z[a] = _mm512_maskz_loadu_ps(live, mk + (size_t)(6 * a + b) * kt + t0);
			at6(z, o);
			for (int i = 0; i < 4; i++)
				s[i][b] = o[i];
		}
		for (int i = 0; i < 4; i++) {
			__m512 o[4];
			at6(s[i], o);
			for (int j = 0; j < 4; j++)
				_mm512_mask_storeu_ps(mk + (size_t)(6 * i + j) * kt + t0, live, o[j]);
		}
	}
}

/* One output row from the transformed products o[j * kt + tx] (output
 * column 4 tx + j): + shift (+ res) (ReLU), the W columns inside the
 * image, 16 tiles (64 columns) at a time: the four columns of each tile
 * interleaved by permutes, then finished and stored under a mask. */
__attribute__((target("avx512f"))) static void write_row_avx512(const float *o, size_t kt,
								int tw, int W, float shift,
								const float *res, int relu,
								float *y)
{
	/* pairs (o0, o1) and (o2, o3) interleaved as floats, then the pairs
	 * interleaved as doubles */
	const __m512i lo2 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
	const __m512i hi2 = _mm512_add_epi32(lo2, _mm512_set1_epi32(8));
	const __m512i lo4 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
	const __m512i hi4 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
	const __m512 sh = _mm512_set1_ps(shift), zero = _mm512_setzero_ps();
	for (int tx = 0; tx < tw; tx += 16) {
		const __mmask16 m = tw - tx >= 16 ? 0xffff : (__mmask16)((1u << (tw - tx)) - 1);
		const __m512 o0 = _mm512_maskz_loadu_ps(m, o + tx);
		const __m512 o1 = _mm512_maskz_loadu_ps(m, o + kt + tx);
		const __m512 o2 = _mm512_maskz_loadu_ps(m, o + 2 * kt + tx);
		const __m512 o3 = _mm512_maskz_loadu_ps(m, o + 3 * kt + tx);
		const __m512d a_lo = _mm512_castps_pd(_mm512_permutex2var_ps(o0, lo2, o1));
		const __m512d a_hi = _mm512_castps_pd(_mm512_permutex2var_ps(o0, hi2, o1));
		const __m512d b_lo = _mm512_castps_pd(_mm512_permutex2var_ps(o2, lo2, o3));
		const __m512d b_hi = _mm512_castps_pd(_mm512_permutex2var_ps(o2, hi2, o3));
		const __m512 cols[4] = {
			_mm512_castpd_ps(_mm512_permutex2var_pd(a_lo, lo4, b_lo)),
			_mm512_castpd_ps(_mm512_permutex2var_pd(a_lo, hi4, b_lo)),
			_mm512_castpd_ps(_mm512_permutex2var_pd(a_hi, lo4, b_hi)),
			_mm512_castpd_ps(_mm512_permutex2var_pd(a_hi, hi4, b_hi)),
		};
		for (int q = 0; q < 4; q++) {
			const int at = 4 * tx + 16 * q;
			const __mmask16 inside = W - at >= 16 ? 0xffff
					       : W - at <= 0 ? 0 : (__mmask16)((1u << (W - at)) - 1);
			if (!inside)
				break;
			__m512 v = _mm512_add_ps(cols[q], sh);
			if (res)
				v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(inside, res + at));
			if (relu) /* zero first: a NaN stays NaN */
				v = _mm512_max_ps(zero, v);
			_mm512_mask_storeu_ps(y + at, inside, v);
		}
	}
}
#endif

static int allow_simd = 1;

void mp_cpu_allow_simd_tiles(int allow)
{
	allow_simd = allow;
}

/* Whether the AVX-512 transforms run: the CPU has AVX-512, they are
 * allowed, and every offset of x fits the gathers' 32-bit indices. */
static int use_avx512(const mp_tensor *x)
{
#ifdef HAVE_AVX512
	static int have = -1;
	if (have < 0) {
		__builtin_cpu_init();
		have = __builtin_cpu_supports("avx512f") != 0;
	}
	return have && allow_simd && mp_tensor_count(x) < ((size_t)1 << 31) - 16;
#else
	(void)x;
	return 0;
#endif
}

/* y = relu?(line + shift + res?) over n values */
VECTOR_CLONES
static void finish_row(const float *line, float shift, const float *res, int relu, float *y,
		       int n)
{
	if (res) {
#pragma omp simd
		for (int i = 0; i < n; i++) {
			const float val = line[i] + shift + res[i];
			y[i] = relu && val < 0 ? 0.0f : val;
		}
	} else {
#pragma omp simd
		for (int i = 0; i < n; i++) {
			const float val = line[i] + shift;
			y[i] = relu && val < 0 ? 0.0f : val;
		}
	}
}

/* y of channel k for the tile rows r0..r1-1 from the transformed
 * products o[i][j] = m[6 i + j][k][t]: + shift (+ res) (ReLU), the parts
 * of the 4x4 tiles inside the image. line: line_floats. */
static void write_output(const wino_geom *g, const float *m, int k, float shift,
			 const float *res, int relu, int r0, int r1, float *y, float *line,
			 int avx512)
{
	const int H = g->H, W = g->W, tw = g->tw, K = g->K;
	const size_t kt = (size_t)K * g->ld;
	const float *mk = m + (size_t)k * g->ld;
	for (int r = r0; r < r1; r++) {
		const int n = r / g->th, ty = r % g->th;
		const size_t plane = ((size_t)n * K + k) * H * W;
		const float *mt = mk + (size_t)(r - r0) * tw;
		for (int i = 0; i < 4 && 4 * ty + i < H; i++) {
			const size_t at = plane + (size_t)(4 * ty + i) * W;
#ifdef HAVE_AVX512
			if (avx512) {
				write_row_avx512(mt + (size_t)(6 * i) * kt, kt, tw, W, shift,
						 res ? res + at : NULL, relu, y + at);
				continue;
			}
#endif
			scatter_tiles_plain(mt + (size_t)(6 * i) * kt, kt, tw, line);
			finish_row(line, shift, res ? res + at : NULL, relu, y + at, W);
		}
	}
	(void)avx512;
}

/* One block's work, over ranges so that either one thread does all of it
 * or the threads share each step. */
typedef struct {
	const wino_geom *g;
	const float *x, *u, *shift, *res;
	float *y;
	int relu, avx512;
} wino_job;

/* the tile rows r0..r1-1 of a block */
typedef struct {
	int r0, r1, tiles;
	float *v, *m, *line;
#ifdef HAVE_AVX512
	tile_table tt;
#endif
} wino_block;

static void input_channels(const wino_job *j, const wino_block *b, int c0, int c1)
{
	const wino_geom *g = j->g;
	for (int c = c0; c < c1; c++) {
#ifdef HAVE_AVX512
		if (j->avx512 && g->tw >= 8) {
			transform_input_rows_avx512(g, j->x, c, b->r0, b->r1, b->v);
			continue;
		}
		if (j->avx512) {
			transform_input_avx512(g, j->x, c, b->tiles, &b->tt, b->v);
			continue;
		}
#endif
		transform_input(g, j->x, c, b->r0, b->r1, b->v);
	}
}

static void products(const wino_job *j, const wino_block *b, int p0, int p1)
{
	const wino_geom *g = j->g;
	const size_t kc = (size_t)g->K * g->C;
	for (int p = p0; p < p1; p++)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->K, b->tiles, g->C, 1.0f,
			    j->u + p * kc, g->C, b->v + p * (size_t)g->C * g->ld, (int)g->ld, 0.0f,
			    b->m + p * (size_t)g->K * g->ld, (int)g->ld);
}

static void output_channels(const wino_job *j, const wino_block *b, int k0, int k1)
{
	const wino_geom *g = j->g;
	for (int k = k0; k < k1; k++) {
#ifdef HAVE_AVX512
		if (j->avx512)
			output_transform_avx512(g, b->m, k, b->tiles);
		else
#endif
			output_transform(g, b->m, k, b->tiles);
		write_output(g, b->m, k, j->shift[k], j->res, j->relu, b->r0, b->r1, j->y, b->line,
			     j->avx512);
	}
}

/* The tiles of x (N x C x H x W) for K outputs, in blocks of whole tile
 * rows holding about want tiles. */
static wino_geom geometry(const mp_tensor *x, int K, size_t want)
{
	wino_geom g = {.N = x->n, .C = x->c, .H = x->h, .W = x->w, .K = K};
	g.th = (g.H + 3) / 4;
	g.tw = (g.W + 3) / 4;
	const size_t total_rows = (size_t)g.N * g.th;
	const size_t rows = (want + g.tw - 1) / g.tw;
	g.rows = (int)(rows < 1 ? 1 : rows > total_rows ? total_rows : rows);
	g.blocks = (int)((total_rows + g.rows - 1) / g.rows);
	g.cap = (size_t)g.rows * g.tw;
	g.ld = (g.cap + 15) / 16 * 16;
	return g;
}

/* 36 transformed values for each input and output channel */
static size_t bytes_per_tile(int C, int K)
{
	return 36 * sizeof(float) * ((size_t)C + K);
}

/* Block blk's tile rows. */
static void block_rows(const wino_geom *g, int blk, wino_block *b)
{
	const int total = g->N * g->th;
	b->r0 = blk * g->rows;
	b->r1 = b->r0 + g->rows < total ? b->r0 + g->rows : total;
	b->tiles = (b->r1 - b->r0) * g->tw;
}

/* The block's tile table, which the AVX-512 gathers of a narrow plane
 * read (its memory: table_at). */
static void block_table(const wino_job *j, wino_block *b)
{
#ifdef HAVE_AVX512
	if (j->avx512 && j->g->tw < 8)
		table_fill(j->g, b->r0, b->r1, &b->tt);
#else
	(void)j, (void)b;
#endif
}

/* Points b's tile table at table_floats(g->cap) floats at at. */
static void table_at(const wino_geom *g, float *at, wino_block *b)
{
#ifdef HAVE_AVX512
	b->tt.off = (int32_t *)at;
	b->tt.row_ok = (uint32_t *)(b->tt.off + g->cap + 16);
	b->tt.col_ok = b->tt.row_ok + 6 * (size_t)chunks_of((int)g->cap);
#else
	(void)g, (void)at, (void)b;
#endif
}

/* Winograd over blocks of tile rows. Where the transformed weights are
 * small next to a block's data (the early stages' large planes), each
 * thread takes whole blocks, so that a block's transformed inputs and
 * products stay in that thread's cache; a block then holds about
 * BLOCK_BYTES of them. Otherwise (the deep stages' small planes and
 * large weights) the blocks are taken one at a time, each step split
 * between the threads: the input transform by channel, the 36 products
 * by element, the output transform by output channel, so that every
 * thread reads only its share of the weights; such a block holds about
 * twice BLOCK_BYTES, and at least K C / (C + K) tiles, so that the
 * weights are read no more often than the block's own data. Either way
 * the blocks depend only on the shapes. */
int mp_cpu_winograd_conv(mp_backend *be, const char *op, const mp_tensor *x, const float *u,
			 const float *shift, int K, const mp_tensor *res, int relu, mp_tensor *y)
{
	const int C = x->c;
	const size_t weight_bytes = 36 * sizeof(float) * (size_t)K * C;
	const int own = weight_bytes * 4 <= BLOCK_BYTES;
	size_t want = (own ? BLOCK_BYTES / 3 : 2 * BLOCK_BYTES) / bytes_per_tile(C, K);
	const size_t for_weights = (size_t)K * C / ((size_t)C + K);
	if (!own && want < for_weights)
		want = for_weights;
	wino_geom g = geometry(x, K, want);

	const int nt = mp_cpu_threads(be);
	const wino_job job = {.g = &g, .x = x->data, .u = u, .shift = shift,
			      .res = res ? res->data : NULL, .y = y->data, .relu = relu,
			      .avx512 = use_avx512(x)};
	const size_t v_size = 36 * (size_t)g.C * g.ld, m_size = 36 * (size_t)g.K * g.ld;
	const size_t t_size = job.avx512 ? table_floats(g.cap) : 0;
	const size_t block_size = v_size + m_size + t_size;
	if (mp_cpu_scratch(be, op, nt, line_floats(g.tw) + (own ? block_size : 0),
			   own ? 0 : block_size))
		return -1;
	/* a block's buffers: the thread's own, or the shared ones */
#pragma omp parallel num_threads(nt) if (MP_CPU_WORTH_THREADS(mp_tensor_count(y)))
	{
		wino_block b;
		b.line = mp_cpu_scratch_thread(be, omp_get_thread_num());
		b.v = own ? b.line + line_floats(g.tw) : mp_cpu_scratch_shared(be);
		b.m = b.v + v_size;
		table_at(&g, b.m + m_size, &b);
		if (own) {
#pragma omp for schedule(dynamic, 1)
			for (int blk = 0; blk < g.blocks; blk++) {
				block_rows(&g, blk, &b);
				block_table(&job, &b);
				input_channels(&job, &b, 0, g.C);
				products(&job, &b, 0, 36);
				output_channels(&job, &b, 0, g.K);
			}
		} else {
			for (int blk = 0; blk < g.blocks; blk++) {
				/* every thread's b, one shared table */
				block_rows(&g, blk, &b);
#pragma omp single
				block_table(&job, &b);
#pragma omp for schedule(static)
				for (int c = 0; c < g.C; c++)
					input_channels(&job, &b, c, c + 1);
#pragma omp for schedule(static)
				for (int p = 0; p < 36; p++)
					products(&job, &b, p, p + 1);
#pragma omp for schedule(static)
				for (int k = 0; k < g.K; k++)
					output_channels(&job, &b, k, k + 1);
			}
		}
	}
	return 0;
}

/* ---- training: the plain convolution and its input gradient ---------------- */

int mp_cpu_winograd_fits(const mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			 int stride, int pad)
{
	return mp_cpu_winograd_on(be) && w->h == 3 && w->w == 3 && stride == 1 && pad == 1 &&
	       mp_cpu_winograd_pays(x->h, x->w);
}

/* The transformed weights u[36][K][C] of w (K x C x 3 x 3) and K zeros
 * of shift after them, in the backend's weight scratch. */
static float *transformed(mp_backend *be, const char *op, const float *w, int K, int C)
{
	const size_t kc = (size_t)K * C;
	float *u = mp_cpu_scratch_weights(be, op, 36 * kc + K);
	if (!u)
		return NULL;
	mp_cpu_winograd_weights(w, NULL, K, C, u, mp_cpu_threads(be));
	memset(u + 36 * kc, 0, (size_t)K * sizeof *u);
	return u;
}

int mp_cpu_winograd_forward(mp_backend *be, const char *op, const mp_tensor *x,
			    const mp_tensor *w, mp_tensor *y)
{
	const int K = w->n, C = w->c;
	const float *u = transformed(be, op, w->data, K, C);
	return u ? mp_cpu_winograd_conv(be, op, x, u, u + 36 * (size_t)K * C, K, NULL, 0, y) : -1;
}

/* dx[c] = sum_k dy[k] correlated with w[k][c] turned by 180 degrees (pad 1
 * on both sides keeps the plane): a forward convolution of dy with the
 * weights wt[c][k][i][j] = w[k][c][2 - i][2 - j], made next to u. */
int mp_cpu_winograd_backward_data(mp_backend *be, const char *op, const mp_tensor *w,
				  const mp_tensor *dy, mp_tensor *dx)
{
	const int K = w->n, C = w->c;
	const size_t kc = (size_t)K * C;
	float *wt = mp_cpu_scratch_weights(be, op, 36 * kc + C + 9 * kc);
	if (!wt)
		return -1;
	wt += 36 * kc + C;
	for (int c = 0; c < C; c++)
		for (int k = 0; k < K; k++)
			for (int t = 0; t < 9; t++)
				wt[((size_t)c * K + k) * 9 + t] = w->data[((size_t)k * C + c) * 9 + 8 - t];
	const float *u = transformed(be, op, wt, C, K);
	return u ? mp_cpu_winograd_conv(be, op, dy, u, u + 36 * kc, C, NULL, 0, dx) : -1;
}

/* ---- training: the weight gradient ------------------------------------------ *
 *
 * y = A^T [U (.) V] A per tile, U = G g G^T, so the gradient of the loss
 * with respect to U is, summed over the tiles of every image,
 *
 *   dU[p][k][c] = sum_t (A dy_t A^T)[p] V[p][c][t]
 *
 * (dy_t the tile's 4x4 outputs' gradient, zero past the plane's edge; V
 * the forward pass's transformed inputs), 36 matrix products of K x tiles
 * by tiles x C, and dw = G^T dU G. The blocks of tile rows are taken in
 * order, each step split between the threads (the input and gradient
 * transforms by channel, the products by element p, each accumulating its
 * own dU[p] block after block), so the sums' order depends only on the
 * shapes. */

/* In place on six rows of n floats, 'stride' apart, of which the first
 * four hold d: z = A d, A = (A^T)^T, six rows from four. */
VECTOR_CLONES
static void grad_step(float *z, size_t stride, int n)
{
	float *restrict z0 = z, *restrict z1 = z0 + stride, *restrict z2 = z1 + stride,
		       *restrict z3 = z2 + stride, *restrict z4 = z3 + stride,
		       *restrict z5 = z4 + stride;
#pragma omp simd
	for (int i = 0; i < n; i++) {
		const float d0 = z0[i], d1 = z1[i], d2 = z2[i], d3 = z3[i];
		const float p02 = d0 + d2, p13 = d1 + d3, q02 = d0 + 4 * d2, q13 = 2 * d1 + 8 * d3;
		z1[i] = p02 + p13;
		z2[i] = p02 - p13;
		z3[i] = q02 + q13;
		z4[i] = q02 - q13;
		z5[i] = d3;
	}
}

#ifdef HAVE_AVX512
/* z = A d over four vectors (six results) */
__attribute__((target("avx512f"))) static inline void a4(const __m512 d[4], __m512 z[6])
{
	const __m512 p02 = _mm512_add_ps(d[0], d[2]), p13 = _mm512_add_ps(d[1], d[3]);
	const __m512 q02 = _mm512_fmadd_ps(_mm512_set1_ps(4), d[2], d[0]);
	const __m512 q13 = _mm512_fmadd_ps(_mm512_set1_ps(8), d[3], _mm512_add_ps(d[1], d[1]));
	z[0] = d[0];
	z[1] = _mm512_add_ps(p02, p13);
	z[2] = _mm512_sub_ps(p02, p13);
	z[3] = _mm512_add_ps(q02, q13);
	z[4] = _mm512_sub_ps(q02, q13);
	z[5] = d[3];
}

/* transform_grad for planes at least 8 tiles wide: 16 tiles of a tile row
 * at a time, each output row's 64 values read with plain (masked) loads
 * and split into the tiles' four columns by permutes, the transform in
 * registers. */
__attribute__((target("avx512f"))) static void transform_grad_rows_avx512(
	const wino_geom *g, const float *dy, int k, int r0, int r1, float *gd)
{
	const int H = g->H, W = g->W, tw = g->tw;
	const size_t kt = (size_t)g->K * g->ld;
	float *gk = gd + (size_t)k * g->ld;
	for (int r = r0; r < r1; r++) {
		const int n = r / g->th, ty = r % g->th;
		const float *dk = dy + ((size_t)n * g->K + k) * H * W;
		for (int tx0 = 0; tx0 < tw; tx0 += 16) {
			const __mmask16 live = tw - tx0 >= 16 ? 0xffff
							      : (__mmask16)((1u << (tw - tx0)) - 1);
			__m512 d[4][4]; /* d[j][i]: row i, column j of the 16 tiles */
			for (int i = 0; i < 4; i++) {
				const int oy = 4 * ty + i;
				__m512 w[4];
				for (int q = 0; q < 4; q++) {
					const int at = 4 * tx0 + 16 * q;
					w[q] = oy < H ? _mm512_maskz_loadu_ps(lanes_inside(at, W),
									   dk + (size_t)oy * W + at)
						      : _mm512_setzero_ps();
				}
				for (int j = 0; j < 4; j++)
					d[j][i] = every_fourth(w, j);
			}
			__m512 s[6][4]; /* A d: s[a][j] */
			for (int j = 0; j < 4; j++) {
				__m512 z[6];
				a4(d[j], z);
				for (int a = 0; a < 6; a++)
					s[a][j] = z[a];
			}
			float *gt = gk + (size_t)(r - r0) * tw + tx0;
			for (int a = 0; a < 6; a++) {
				__m512 z[6];
				a4(s[a], z);
				for (int b = 0; b < 6; b++)
					_mm512_mask_storeu_ps(gt + (size_t)(6 * a + b) * kt, live, z[b]);
			}
		}
	}
}
#endif

/* The transformed output gradient of channel k for the tile rows
 * r0..r1-1: gd[p][k][t] = (A dy_t A^T)[p], laid out as the products m. */
static void transform_grad(const wino_geom *g, const float *dy, int k, int r0, int r1, float *gd,
			   int avx512)
{
#ifdef HAVE_AVX512
	if (avx512 && g->tw >= 8) {
		transform_grad_rows_avx512(g, dy, k, r0, r1, gd);
		return;
	}
#endif
	(void)avx512;
	const int H = g->H, W = g->W, tw = g->tw, tiles = (r1 - r0) * tw;
	const size_t kt = (size_t)g->K * g->ld;
	float *gk = gd + (size_t)k * g->ld;
	for (int r = r0; r < r1; r++) {
		const int n = r / g->th, ty = r % g->th;
		const float *dk = dy + ((size_t)n * g->K + k) * H * W;
		float *gt = gk + (size_t)(r - r0) * tw;
		for (int i = 0; i < 4; i++) {
			const int oy = 4 * ty + i;
			for (int j = 0; j < 4; j++) {
				float *gj = gt + (size_t)(6 * i + j) * kt;
				for (int tx = 0; tx < tw; tx++) {
					const int ox = 4 * tx + j;
					gj[tx] = oy < H && ox < W ? dk[(size_t)oy * W + ox] : 0.0f;
				}
			}
		}
	}
	/* A over the tile's rows (columns 0-3), then over its columns */
	for (int j = 0; j < 4; j++)
		grad_step(gk + (size_t)j * kt, 6 * kt, tiles);
	for (int a = 0; a < 6; a++)
		grad_step(gk + (size_t)(6 * a) * kt, kt, tiles);
}

/* dw[k][c] = G^T dU[.][k][c] G for one output channel k, in double
 * before the one rounding, 16 input channels at a time so that the sums
 * vectorize (the transpose of weights_row). */
VECTOR_CLONES
static void weight_grad_row(const float *du, size_t kc, int C, float *dw)
{
	enum { B = 16 };
	for (int c0 = 0; c0 < C; c0 += B) {
		const int n = C - c0 < B ? C - c0 : B;
		double t[6][3][B]; /* dU G */
		for (int a = 0; a < 6; a++) {
			double d[6][B];
			for (int b = 0; b < 6; b++)
#pragma omp simd
				for (int c = 0; c < n; c++)
					d[b][c] = du[(size_t)(6 * a + b) * kc + c0 + c];
			for (int j = 0; j < 3; j++)
#pragma omp simd
				for (int c = 0; c < n; c++)
					t[a][j][c] = d[0][c] * G[0][j] + d[1][c] * G[1][j] +
						     d[2][c] * G[2][j] + d[3][c] * G[3][j] +
						     d[4][c] * G[4][j] + d[5][c] * G[5][j];
		}
		for (int i = 0; i < 3; i++)
			for (int j = 0; j < 3; j++)
#pragma omp simd
				for (int c = 0; c < n; c++)
					dw[(size_t)(c0 + c) * 9 + 3 * i + j] =
						(float)(G[0][i] * t[0][j][c] + G[1][i] * t[1][j][c] +
							G[2][i] * t[2][j][c] + G[3][i] * t[3][j][c] +
							G[4][i] * t[4][j][c] + G[5][i] * t[5][j][c]);
	}
}

static void weight_grad_finish(const float *du, int K, int C, float *dw, int threads)
{
	const size_t kc = (size_t)K * C;
#pragma omp parallel for num_threads(threads) schedule(static) if (MP_CPU_WORTH_THREADS(kc))
	for (int k = 0; k < K; k++)
		weight_grad_row(du + (size_t)k * C, kc, C, dw + (size_t)k * C * 9);
}

int mp_cpu_winograd_weight_grad(mp_backend *be, const char *op, const mp_tensor *x,
				const mp_tensor *dy, mp_tensor *dw)
{
	wino_geom g = geometry(x, dy->c, 2 * BLOCK_BYTES / bytes_per_tile(x->c, dy->c));

	const int nt = mp_cpu_threads(be);
	const size_t kc = (size_t)g.K * g.C;
	float *du = mp_cpu_scratch_weights(be, op, 36 * kc);
	if (!du)
		return -1;
	const wino_job job = {.g = &g, .x = x->data, .avx512 = use_avx512(x)};
	const size_t v_size = 36 * (size_t)g.C * g.ld, gd_size = 36 * (size_t)g.K * g.ld;
	const size_t t_size = job.avx512 ? table_floats(g.cap) : 0;
	if (mp_cpu_scratch(be, op, nt, 0, v_size + gd_size + t_size))
		return -1;
	wino_block b = {.v = mp_cpu_scratch_shared(be)};
	float *gd = b.v + v_size;
	table_at(&g, gd + gd_size, &b);
	const int threads = MP_CPU_WORTH_THREADS(mp_tensor_count(dy)) ? nt : 1;
#pragma omp parallel num_threads(threads) firstprivate(b)
	for (int blk = 0; blk < g.blocks; blk++) {
		block_rows(&g, blk, &b);
#pragma omp single
		block_table(&job, &b);
#pragma omp for schedule(static) nowait
		for (int c = 0; c < g.C; c++)
			input_channels(&job, &b, c, c + 1);
#pragma omp for schedule(static)
		for (int k = 0; k < g.K; k++)
			transform_grad(&g, dy->data, k, b.r0, b.r1, gd, job.avx512);
#pragma omp for schedule(static)
		for (int p = 0; p < 36; p++)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.K, g.C, b.tiles, 1.0f,
				    gd + p * (size_t)g.K * g.ld, (int)g.ld,
				    b.v + p * (size_t)g.C * g.ld, (int)g.ld, blk ? 1.0f : 0.0f,
				    du + p * kc, g.C);
	}
	weight_grad_finish(du, g.K, g.C, dw->data, nt);
	return 0;
}
