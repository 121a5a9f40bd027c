/* Causal softmax attention for short sequences and narrow heads, forward and backward, on
 * one CPU thread (circuits/training/native_attention.py compiles and calls it).
 *
 * Why: the stacked trainer's models have sequences of ~48 positions and heads of width ~16;
 * for those, the general fused kernels spend most of their time on blocking and per-block
 * GEMM calls. Here one (sequence, head) pair is a few KiB, so it stays in L1: it is copied
 * into aligned scratch padded to 16 positions, and each product is a loop of 16-wide vector
 * multiply-adds (GCC/Clang vector extensions: AVX-512, AVX2, SSE or NEON, whatever the
 * compiler targets) over four rows at a time, skipping the blocks the causal mask zeroes.
 *
 * Layout: q, k, v (and their gradients) are described by Rows (below): a strided tensor whose
 * row r = sequence * pos + position holds every head's numbers, head h's d_head at offset
 * h * d_head; or, for a first layer without LayerNorm, a token table and a position table
 * summed. out and dout are contiguous [rows, n_heads * d_head]; stats is [rows, n_heads, 2]:
 * each query's score maximum and inverse softmax normaliser, saved by the forward for the
 * backward (which recomputes the pattern from them). pattern, if not NULL, receives
 * [sequence, head, query, key] (zeros above the diagonal).
 * d_head must be 16, 32, 48 or 64 (returns 2 otherwise; 1 if scratch cannot be allocated).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#define MAX_CHUNKS 4 /* d_head <= 64 */

static inline v16 splat(float x) { return (v16){0} + x; }

/* Horizontal sum and maximum as trees of shuffles (a loop over lanes would be a chain of
 * dependent scalar operations, which dominated the softmax). */
#if defined(__clang__)
#define HALF(x, k)                                                                             \
    __builtin_shufflevector(x, x, (0 + k) % 16, (1 + k) % 16, (2 + k) % 16, (3 + k) % 16,      \
                            (4 + k) % 16, (5 + k) % 16, (6 + k) % 16, (7 + k) % 16,            \
                            (8 + k) % 16, (9 + k) % 16, (10 + k) % 16, (11 + k) % 16,          \
                            (12 + k) % 16, (13 + k) % 16, (14 + k) % 16, (15 + k) % 16)
#else
#define HALF(x, k)                                                                             \
    __builtin_shuffle(x, (v16i){(0 + k) % 16, (1 + k) % 16, (2 + k) % 16, (3 + k) % 16,        \
                                (4 + k) % 16, (5 + k) % 16, (6 + k) % 16, (7 + k) % 16,        \
                                (8 + k) % 16, (9 + k) % 16, (10 + k) % 16, (11 + k) % 16,      \
                                (12 + k) % 16, (13 + k) % 16, (14 + k) % 16, (15 + k) % 16})
#endif

static inline v16 vmax(v16 a, v16 b) {
    const v16i a_ge = a >= b;
    return (v16)(((v16i)a & a_ge) | ((v16i)b & ~a_ge));
}

static inline float hsum(v16 x) {
    x += HALF(x, 8);
    x += HALF(x, 4);
    x += HALF(x, 2);
    x += HALF(x, 1);
    return x[0];
}

static inline float hmax(v16 x) {
    x = vmax(x, HALF(x, 8));
    x = vmax(x, HALF(x, 4));
    x = vmax(x, HALF(x, 2));
    x = vmax(x, HALF(x, 1));
    return x[0];
}

/* exp(x) for x <= ~0 (scores minus their maximum or log-sum-exp): Cody-Waite reduction and a
 * degree-7 polynomial, about 1 ulp. Inputs below -87 give ~exp(-87) rather than a denormal;
 * callers zero the masked entries afterwards. */
static inline v16 exp_neg(v16 x) {
    const v16i low = x < splat(-87.0f);
    x = (v16)(((v16i)x & ~low) | ((v16i)splat(-87.0f) & low));
    const v16 t = x * 1.44269504088896341f - 0.5f;
    const v16i ni = __builtin_convertvector(t, v16i); /* truncation: round(x / ln 2) for x <= 0 */
    const v16 n = __builtin_convertvector(ni, v16);
    v16 r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    v16 p = splat(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (v16)((ni + 127) << 23);
}

/* Scratch for one (sequence, head) pair, positions padded to pp (a multiple of 16). */
typedef struct {
    int pos, pp, chunks;
    v16 *a, *b, *c, *d;  /* [pp][chunks] row matrices */
    v16 *at, *bt;        /* [e][pp / 16] transposed ones */
    v16 *s, *t, *u;      /* [pp][pp / 16] score-shaped ones */
} Scratch;

static inline __attribute__((always_inline)) int scratch_init(Scratch *w, int pos, int e) {
    w->pos = pos;
    w->pp = (pos + 15) / 16 * 16;
    w->chunks = e / 16;
    const long rows = (long)w->pp * w->chunks, tr = (long)e * (w->pp / 16);
    const long sq = (long)w->pp * (w->pp / 16);
    const long n = 4 * rows + 2 * tr + 3 * sq;
    v16 *mem = aligned_alloc(64, sizeof(v16) * n);
    if (!mem) return 1;
    memset(mem, 0, sizeof(v16) * n);
    w->a = mem, w->b = w->a + rows, w->c = w->b + rows, w->d = w->c + rows;
    w->at = w->d + rows, w->bt = w->at + tr;
    w->s = w->bt + tr, w->t = w->s + sq, w->u = w->t + sq;
    return 0;
}

/* Where the rows of q, k, v (or their gradients) are. Either a strided tensor: row r at
 * x + r * rs; or two tables summed (layer 0 of a model without LayerNorm, whose input is a
 * token embedding plus a position embedding): row r = s * pos + j of sequence s, instance
 * g = s / batch, is tok + (g * vocab + ids[r]) * rs plus pos + (g * pos + j) * rs. Gradients
 * into tables are added (the caller zeroes them); into a tensor, stored. */
typedef struct {
    float *x;
    int64_t rs;
    float *tok, *pos;
    const int64_t *ids;
    int64_t vocab, batch;
} Rows;

static inline __attribute__((always_inline)) v16 get(const Rows *r, long s, int pos, int j,
                                                     long off) {
    v16 a, b;
    if (!r->ids) {
        memcpy(&a, r->x + (s * pos + j) * r->rs + off, 64);
        return a;
    }
    const long g = s / r->batch, id = r->ids[s * pos + j];
    memcpy(&a, r->tok + (g * r->vocab + id) * r->rs + off, 64);
    memcpy(&b, r->pos + (g * pos + j) * r->rs + off, 64);
    return a + b;
}

static inline __attribute__((always_inline)) void put(const Rows *r, long s, int pos, int j,
                                                      long off, v16 val) {
    if (!r->ids) {
        memcpy(r->x + (s * pos + j) * r->rs + off, &val, 64);
        return;
    }
    const long g = s / r->batch, id = r->ids[s * pos + j];
    float *t = r->tok + (g * r->vocab + id) * r->rs + off, *p = r->pos + (g * pos + j) * r->rs + off;
    v16 a, b;
    memcpy(&a, t, 64);
    memcpy(&b, p, 64);
    a += val, b += val;
    memcpy(t, &a, 64);
    memcpy(p, &b, 64);
}

/* Sequence s's rows of head h into m [pp][chunks] (padding stays zero). */
static inline __attribute__((always_inline)) void load_rows(const Rows *r, long s, int h,
                                                            const Scratch *w, v16 *m) {
    const long e = 16L * w->chunks;
    for (int j = 0; j < w->pos; j++)
        for (int c = 0; c < w->chunks; c++) m[(long)j * w->chunks + c] = get(r, s, w->pos, j, h * e + 16 * c);
}

/* A 16 x 16 transpose in registers: four rounds of two-input shuffles, each swapping the
 * off-diagonal s x s blocks of every 2s x 2s block (s = 8, 4, 2, 1). */
#define LO(s, l) (((l) & (s)) ? 16 + (l) - (s) : (l))
#define HI(s, l) (((l) & (s)) ? 16 + (l) : (l) + (s))
#define LANES(F, s)                                                                            \
    F(s, 0), F(s, 1), F(s, 2), F(s, 3), F(s, 4), F(s, 5), F(s, 6), F(s, 7), F(s, 8), F(s, 9),  \
        F(s, 10), F(s, 11), F(s, 12), F(s, 13), F(s, 14), F(s, 15)
#if defined(__clang__)
#define SHUFFLE2(a, b, F, s) __builtin_shufflevector(a, b, LANES(F, s))
#else
#define SHUFFLE2(a, b, F, s) __builtin_shuffle(a, b, (v16i){LANES(F, s)})
#endif
#define ROUND(s)                                                                               \
    for (int r = 0; r < 16; r++)                                                               \
        if (!(r & (s))) {                                                                      \
            const v16 lo = SHUFFLE2(m[r], m[r + (s)], LO, s);                                  \
            const v16 hi = SHUFFLE2(m[r], m[r + (s)], HI, s);                                  \
            m[r] = lo, m[r + (s)] = hi;                                                        \
        }

static inline void transpose16(v16 m[16]) {
    ROUND(8) ROUND(4) ROUND(2) ROUND(1)
}

/* ... and transposed, into mt [e][pp / 16], 16 x 16 tiles at a time. */
static inline __attribute__((always_inline)) void load_cols(const Rows *x, long s, int h,
                                                            const Scratch *w, v16 *mt) {
    const int nb = w->pp / 16;
    const long e = 16L * w->chunks;
    for (int jb = 0; jb < nb; jb++) {
        const int rows = w->pos - 16 * jb < 16 ? w->pos - 16 * jb : 16;
        for (int c = 0; c < w->chunks; c++) {
            v16 m[16];
            for (int r = 0; r < 16; r++) {
                if (r < rows)
                    m[r] = get(x, s, w->pos, 16 * jb + r, h * e + 16 * c);
                else
                    m[r] = (v16){0};
            }
            transpose16(m);
            for (int d = 0; d < 16; d++) mt[(long)(16 * c + d) * nb + jb] = m[d];
        }
    }
}

static inline __attribute__((always_inline)) void store_rows(const v16 *m, const Scratch *w,
                                                             const Rows *r, long s, int h) {
    const long e = 16L * w->chunks;
    for (int j = 0; j < w->pos; j++)
        for (int c = 0; c < w->chunks; c++) put(r, s, w->pos, j, h * e + 16 * c, m[(long)j * w->chunks + c]);
}

/* s[i][j] = scale * a_i . b_j for the key blocks up to query i's: a [pp][chunks] rows,
 * bt [e][pp / 16] the other operand transposed. Four query rows at a time (one 16-block). */
static inline __attribute__((always_inline)) void scores(const Scratch *w, const v16 *a, const v16 *bt, float scale, v16 *s) {
    const int nb = w->pp / 16, e = 16 * w->chunks;
    for (int i = 0; i < w->pp; i += 4) {
        const int blocks = i / 16 + 1;
        for (int jb = 0; jb < blocks; jb++) {
            v16 acc0 = {0}, acc1 = {0}, acc2 = {0}, acc3 = {0};
            const float *a0 = (const float *)(a + (long)i * w->chunks);
            const long ar = 16L * w->chunks;
            for (int d = 0; d < e; d++) {
                const v16 kv = bt[(long)d * nb + jb];
                acc0 += a0[d] * kv;
                acc1 += a0[ar + d] * kv;
                acc2 += a0[2 * ar + d] * kv;
                acc3 += a0[3 * ar + d] * kv;
            }
            s[(long)i * nb + jb] = acc0 * scale;
            s[(long)(i + 1) * nb + jb] = acc1 * scale;
            s[(long)(i + 2) * nb + jb] = acc2 * scale;
            s[(long)(i + 3) * nb + jb] = acc3 * scale;
        }
    }
}

/* out[i] = sum_j p[i][j] b_j over j <= i + 3 (p is zero above its diagonal): p [pp][pp / 16],
 * b and out [pp][chunks]. */
static inline __attribute__((always_inline)) void lower_times(const Scratch *w, const v16 *p, const v16 *b, v16 *out) {
    const int nb = w->pp / 16, ch = w->chunks;
    for (int i = 0; i < w->pp; i += 4) {
        v16 acc[4][MAX_CHUNKS] = {{{0}}};
        const float *p0 = (const float *)(p + (long)i * nb);
        const long pr = 16L * nb;
        for (int j = 0; j < i + 4; j++) {
            const float c0 = p0[j], c1 = p0[pr + j], c2 = p0[2 * pr + j], c3 = p0[3 * pr + j];
            for (int c = 0; c < ch; c++) {
                const v16 bv = b[(long)j * ch + c];
                acc[0][c] += c0 * bv;
                acc[1][c] += c1 * bv;
                acc[2][c] += c2 * bv;
                acc[3][c] += c3 * bv;
            }
        }
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < ch; c++) out[(long)(i + r) * ch + c] = acc[r][c];
    }
}

/* out[j] = sum_i p[i][j] b_i over i >= j (p zero above its diagonal), i.e. p^T b. */
static inline __attribute__((always_inline)) void upper_times(const Scratch *w, const v16 *p, const v16 *b, v16 *out) {
    const int nb = w->pp / 16, ch = w->chunks;
    const float *pf = (const float *)p;
    const long pr = 16L * nb;
    for (int j = 0; j < w->pp; j += 4) {
        v16 acc[4][MAX_CHUNKS] = {{{0}}};
        for (int i = j; i < w->pp; i++) {
            const float *pi = pf + i * pr + j;
            for (int c = 0; c < ch; c++) {
                const v16 bv = b[(long)i * ch + c];
                acc[0][c] += pi[0] * bv;
                acc[1][c] += pi[1] * bv;
                acc[2][c] += pi[2] * bv;
                acc[3][c] += pi[3] * bv;
            }
        }
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < ch; c++) out[(long)(j + r) * ch + c] = acc[r][c];
    }
}

/* Entries of s row i past key i (and padding rows) set to zero after f has been applied. */
static inline v16i causal_keep(int i, int jb) {
    const v16i idx = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return (idx + jb * 16) <= i;
}

static inline v16 causal_mask(v16 x, int i, int jb) { return (v16)((v16i)x & causal_keep(i, jb)); }

static inline __attribute__((always_inline)) int forward_body(
    const Rows *q, const Rows *k, const Rows *v, int64_t n_seq, int pos, int n_heads, float scale,
    float *out, float *stats, float *pattern, const int e) {
    if (pos < 1) return 2;
    Scratch w;
    if (scratch_init(&w, pos, e)) return 1;
    const int nb = w.pp / 16;
    const Rows z = {out, (int64_t)n_heads * e, 0, 0, 0, 0, 0};
    for (long s = 0; s < n_seq; s++) {
        for (int h = 0; h < n_heads; h++) {
            const long r0 = s * pos;
            load_rows(q, s, h, &w, w.a);
            load_cols(k, s, h, &w, w.at);
            load_rows(v, s, h, &w, w.b);
            scores(&w, w.a, w.at, scale, w.s);
            for (int i = 0; i < pos; i++) {
                v16 *row = w.s + (long)i * nb;
                const int blocks = i / 16 + 1;
                v16 mv = splat(-INFINITY);
                for (int jb = 0; jb < blocks; jb++) {
                    const v16i keep = causal_keep(i, jb);
                    const v16 x = (v16)(((v16i)row[jb] & keep) | ((v16i)splat(-INFINITY) & ~keep));
                    mv = vmax(mv, x);
                }
                const float m = hmax(mv);
                v16 sum = {0};
                for (int jb = 0; jb < blocks; jb++) {
                    row[jb] = causal_mask(exp_neg(row[jb] - m), i, jb);
                    sum += row[jb];
                }
                const float inv = 1.0f / hsum(sum);
                for (int jb = 0; jb < blocks; jb++) row[jb] *= inv;
                stats[2 * ((r0 + i) * n_heads + h)] = m;
                stats[2 * ((r0 + i) * n_heads + h) + 1] = inv;
                if (pattern) {
                    float *pr = pattern + ((s * n_heads + h) * pos + i) * (long)pos;
                    memcpy(pr, row, sizeof(float) * (i + 1));
                    memset(pr + i + 1, 0, sizeof(float) * (pos - i - 1));
                }
            }
            lower_times(&w, w.s, w.b, w.c);
            store_rows(w.c, &w, &z, s, h);
        }
    }
    free(w.a);
    return 0;
}

static inline __attribute__((always_inline)) int backward_body(
    const Rows *q, const Rows *k, const Rows *v, int64_t n_seq, int pos, int n_heads, float scale,
    const float *dout, const float *stats, const Rows *dq, const Rows *dk, const Rows *dv,
    const int e) {
    if (pos < 1) return 2;
    Scratch w;
    if (scratch_init(&w, pos, e)) return 1;
    const int nb = w.pp / 16;
    const Rows dz = {(float *)dout, (int64_t)n_heads * e, 0, 0, 0, 0, 0};
    for (long s = 0; s < n_seq; s++) {
        for (int h = 0; h < n_heads; h++) {
            const long r0 = s * pos;
            load_rows(q, s, h, &w, w.a);
            load_cols(k, s, h, &w, w.at);
            load_rows(k, s, h, &w, w.b);
            load_cols(v, s, h, &w, w.bt);
            load_rows(&dz, s, h, &w, w.c);
            scores(&w, w.a, w.at, scale, w.s);   /* s: scaled scores, then the pattern */
            scores(&w, w.c, w.bt, 1.0f, w.t);    /* t: dP = dout v^T */
            for (int i = 0; i < pos; i++) {
                v16 *p = w.s + (long)i * nb, *dp = w.t + (long)i * nb, *ds = w.u + (long)i * nb;
                const int blocks = i / 16 + 1;
                const float m = stats[2 * ((r0 + i) * n_heads + h)];
                const float inv = stats[2 * ((r0 + i) * n_heads + h) + 1];
                v16 dsum = {0};
                for (int jb = 0; jb < blocks; jb++) {
                    p[jb] = causal_mask(exp_neg(p[jb] - m), i, jb) * inv;
                    dsum += p[jb] * dp[jb];
                }
                const float D = hsum(dsum);
                for (int jb = 0; jb < blocks; jb++) ds[jb] = p[jb] * (dp[jb] - D) * scale;
            }
            lower_times(&w, w.u, w.b, w.d); /* dq = ds k */
            store_rows(w.d, &w, dq, s, h);
            upper_times(&w, w.u, w.a, w.d); /* dk = ds^T q */
            store_rows(w.d, &w, dk, s, h);
            upper_times(&w, w.s, w.c, w.d); /* dv = p^T dout */
            store_rows(w.d, &w, dv, s, h);
        }
    }
    free(w.a);
    return 0;
}

/* The bodies above, compiled once per supported d_head so that the head loops have constant
 * trip counts (fully unrolled, no memcpy calls). */
#define DISPATCH(body, ...)                                      \
    switch (e) {                                                 \
        case 16: return body(__VA_ARGS__, 16);                   \
        case 32: return body(__VA_ARGS__, 32);                   \
        case 48: return body(__VA_ARGS__, 48);                   \
        case 64: return body(__VA_ARGS__, 64);                   \
        default: return 2;                                       \
    }

int circuits_attention_forward(const Rows *q, const Rows *k, const Rows *v, int64_t n_seq,
                               int pos, int n_heads, int e, float scale, float *out, float *stats,
                               float *pattern) {
    DISPATCH(forward_body, q, k, v, n_seq, pos, n_heads, scale, out, stats, pattern)
}

int circuits_attention_backward(const Rows *q, const Rows *k, const Rows *v, int64_t n_seq,
                                int pos, int n_heads, int e, float scale, const float *dout,
                                const float *stats, const Rows *dq, const Rows *dk,
                                const Rows *dv) {
    DISPATCH(backward_body, q, k, v, n_seq, pos, n_heads, scale, dout, stats, dq, dk, dv)
}
