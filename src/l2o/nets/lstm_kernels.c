/* The LSTM layer's elementwise work in two loops, for float32 rows of coordinates.
 *
 * Built at run time by l2o/nets/native.py with the system's C compiler (no torch headers) and
 * called through ctypes. The eager PyTorch path in lstm_cell.py computes the same maths in about
 * fifteen kernels per direction; here it is one pass over the rows each way. Gates are packed
 * [i, f, o, g] per row, g's pre-activation already doubled, so σ covers all four
 * (g = tanh(a) = 2σ(2a) − 1).
 *
 * σ(x) = 1 / (1 + e^{−x}) with e^x from Cephes' expf (range reduction by ln 2 in two parts, a
 * degree-6 polynomial, the exponent set by bits): about one ulp, branch-free so that the
 * compiler vectorises it, and NaN in gives NaN out. The σ passes run over flat arrays (every
 * gate of every row at once), the rest row by row.
 * Built with -ffp-contract=off, so the vector body and the scalar tail round alike: a row's
 * result does not depend on how many rows there are or where it sits.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* a·b + c, fused where the target has FMA (explicitly, so that vector and scalar code agree) */
#ifdef __FMA__
#define MADD(a, b, c) fmaf(a, b, c)
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* x where lo ≤ x ≤ hi, else the bound; NaN stays NaN. Bit masks rather than ?: or fminf, so
 * that the loop vectorises without AVX-512's masks and without fast-math. */
static inline float clamp(float x, float lo, float hi) {
    int32_t above = -(int32_t)(x > hi), below = -(int32_t)(x < lo), xb, hb, lb;
    memcpy(&xb, &x, sizeof x);
    memcpy(&hb, &hi, sizeof hi);
    memcpy(&lb, &lo, sizeof lo);
    xb = (xb & ~(above | below)) | (hb & above) | (lb & below);
    memcpy(&x, &xb, sizeof x);
    return x;
}

static inline float exp_cephes(float x) {
    /* clamped so that 2^round(x / ln 2) is a normal float, −126 … 127: e^x from 4e−38 to 2e38 */
    x = clamp(x, -87.33654475f, 88.02969193f);
    /* round(x / ln 2) by the 1.5·2^23 trick: exact for |t| < 2^22, no rounding-mode call */
    float t = x * 1.44269504088896341f;
    float fx = (t + 12582912.0f) - 12582912.0f;
    float r = MADD(fx, -0.693359375f, x);
    r = MADD(fx, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = MADD(p, r, 1.3981999507e-3f);
    p = MADD(p, r, 8.3334519073e-3f);
    p = MADD(p, r, 4.1665795894e-2f);
    p = MADD(p, r, 1.6666665459e-1f);
    p = MADD(p, r, 5.0000001201e-1f);
    float y = MADD(p, r * r, r + 1.0f);
    int32_t bits = ((int32_t)fx + 127) << 23; /* 2^fx */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_cephes(-x)); }

/* gates (n, 4H): in, x·W, the pre-activations less the bias (4H); out, σ((x·W + b) · scale),
 * scale (4H) being 1 for i, f, o and 2 for g (exact: the same as scaling W and b first). c (n, H)
 * with row stride c_stride. Out: c_new, tanh_c, h_new (n, H), contiguous. */
void lstm_forward(int64_t n, int64_t H, float *gates, const float *bias, const float *scale,
                  const float *c, int64_t c_stride, float *c_new, float *tanh_c, float *h_new) {
    for (int64_t row = 0; row < n; row++) {
        float *restrict g = gates + row * 4 * H;
        const float *restrict b = bias, *restrict m = scale;
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; j++) g[j] = sigmoid((g[j] + b[j]) * m[j]);
    }
    for (int64_t row = 0; row < n; row++) {
        const float *restrict gi = gates + row * 4 * H, *restrict gf = gi + H;
        const float *restrict gs = gf + 2 * H, *restrict cr = c + row * c_stride;
        float *restrict cn = c_new + row * H, *restrict twice = tanh_c + row * H;
#pragma omp simd
        for (int64_t k = 0; k < H; k++) {
            float value = gf[k] * cr[k] + gi[k] * (2.0f * gs[k] - 1.0f);
            cn[k] = value;
            twice[k] = value + value;
        }
    }
    /* tanh c = 2σ(2c) − 1, over the flat (n, H) array: one vector loop, no row tails */
    int64_t count = n * H;
#pragma omp simd
    for (int64_t j = 0; j < count; j++) tanh_c[j] = 2.0f * sigmoid(tanh_c[j]) - 1.0f;
    for (int64_t row = 0; row < n; row++) {
        const float *restrict go = gates + row * 4 * H + 2 * H, *restrict tc = tanh_c + row * H;
        float *restrict hn = h_new + row * H;
#pragma omp simd
        for (int64_t k = 0; k < H; k++) hn[k] = go[k] * tc[k];
    }
}

/* The backward's rows of H = 20 in 512-bit vectors leave a 4-wide tail each: in 256-bit ones
 * the loop runs ~25 % faster (measured on AMD Zen 4 at H = 20), while the forward's flat σ
 * passes gain from 512. GCC's per-function switch; other compilers keep their own choice. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ROW_VECTORS __attribute__((target("prefer-vector-width=256")))
#else
#define ROW_VECTORS
#endif

/* The gradient with respect to the pre-activations, dz (n, 4H), to the old cell state,
 * dc_prev (n, H), and the column sums of dz (4H, in double, in row order: the bias's gradient;
 * also rounded to float into d_bias unless that is NULL).
 *
 * The gradient reaching h is dh + dh2 + d_out ⊗ w_out: what the next step hands back, what the
 * layer above hands back (a column slice of its input gradient), and the linear output's
 * share (d_out (n) the gradient of the output, w_out (H) its weights). Each of dh, dh2, dc is
 * read with its row stride; an absent one is H zeros with stride 0; an absent d_out is NULL.
 */
ROW_VECTORS void lstm_backward(int64_t n, int64_t H, const float *dh, int64_t dh_stride,
                               const float *dh2, int64_t dh2_stride, const float *d_out,
                               const float *w_out, const float *dc, int64_t dc_stride,
                               const float *gates, const float *c, int64_t c_stride,
                               const float *tanh_c, float *dz, float *dc_prev, double *sums,
                               float *d_bias) {
    for (int64_t j = 0; j < 4 * H; j++) sums[j] = 0.0;
    for (int64_t row = 0; row < n; row++) {
        const float *restrict gi = gates + row * 4 * H, *restrict gf = gi + H;
        const float *restrict go = gf + H, *restrict gs = go + H;
        const float *restrict cr = c + row * c_stride, *restrict tc = tanh_c + row * H;
        const float *restrict dhr = dh + row * dh_stride, *restrict dh2r = dh2 + row * dh2_stride;
        const float *restrict dcr = dc + row * dc_stride, *restrict w = w_out;
        const float dout = d_out ? d_out[row] : 0.0f;
        float *restrict dzi = dz + row * 4 * H, *restrict dzf = dzi + H;
        float *restrict dzo = dzf + H, *restrict dzs = dzo + H;
        float *restrict dcp = dc_prev + row * H;
#pragma omp simd
        for (int64_t k = 0; k < H; k++) {
            float i = gi[k], f = gf[k], o = go[k], s = gs[k], t = tc[k];
            float dhk = dhr[k] + dh2r[k] + dout * w[k];
            float total = dhk * o * (1.0f - t * t) + dcr[k];
            dzi[k] = total * (2.0f * s - 1.0f) * (i * (1.0f - i));
            dzf[k] = total * cr[k] * (f * (1.0f - f));
            dzo[k] = dhk * t * (o * (1.0f - o));
            dzs[k] = total * i * (s * (1.0f - s)) * 4.0f;
            dcp[k] = total * f;
        }
        double *restrict acc = sums;
        const float *restrict d = dzi;
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; j++) acc[j] += (double)d[j];
    }
    if (d_bias)
        for (int64_t j = 0; j < 4 * H; j++) d_bias[j] = (float)sums[j];
}

/* The linear output: out[r] = (h[r] · w + bias) · scale, or 0 where grads[r] == 0 (grads may
 * be NULL: no such coordinates). h (n, H) contiguous. */
void lstm_output(int64_t n, int64_t H, const float *h, const float *w, float bias, float scale,
                 const float *grads, float *out) {
    for (int64_t row = 0; row < n; row++) {
        const float *restrict hr = h + row * H, *restrict wr = w;
        float dot = 0.0f; /* in k order, so every row sums alike (no reassociation) */
        for (int64_t k = 0; k < H; k++) dot += hr[k] * wr[k];
        float value = (dot + bias) * scale;
        out[row] = grads && grads[row] == 0.0f ? 0.0f : value;
    }
}

/* Its backward: d_out[r] = d_update[r] · scale (0 where grads[r] == 0), the gradient of the
 * output before the scale; d_w (H) = Σ_r d_out[r] h[r] and d_b = Σ_r d_out[r], in double. */
void lstm_output_backward(int64_t n, int64_t H, const float *d_update, float scale,
                          const float *grads, const float *h, float *d_out, float *d_w,
                          float *d_b) {
    double total = 0.0, *sums = calloc(H, sizeof(double));
    for (int64_t row = 0; row < n; row++) {
        float d = grads && grads[row] == 0.0f ? 0.0f : d_update[row] * scale;
        d_out[row] = d;
        total += (double)d;
        const float *restrict hr = h + row * H;
        double *restrict acc = sums;
#pragma omp simd
        for (int64_t k = 0; k < H; k++) acc[k] += (double)(d * hr[k]);
    }
    for (int64_t k = 0; k < H; k++) d_w[k] = (float)sums[k];
    *d_b = (float)total;
    free(sums);
}

/* The paper's preprocessing of n gradients into (n, 2) features: (log|g| / p, sign g) where
 * |g| ≥ threshold = e^{−p}, else (−1, e^{p} g). NaN gives (−1, NaN), as the eager path. */
void log_sign(int64_t n, const float *grads, float threshold, float p, float exp_p,
              float *out) {
    for (int64_t j = 0; j < n; j++) {
        float g = grads[j], magnitude = fabsf(g);
        int large = magnitude >= threshold;
        out[2 * j] = large ? logf(magnitude) / p : -1.0f;
        out[2 * j + 1] = large ? (g > 0.0f ? 1.0f : -1.0f) : g * exp_p;
    }
}

/* ---- A whole layer step in one call: the matmuls through the BLAS torch itself uses ----
 *
 * native.py hands over the address of the Fortran sgemm_ that torch's library exports (MKL or
 * OpenBLAS): the same kernels as torch.mm, without a torch dispatch, an output allocation and
 * a Python call per matmul, and without the torch.cat of [x, h] (copied here row by row).
 * Matrices are row-major; sgemm_ is column-major, so C = A·B is asked as Cᵀ = Bᵀ·Aᵀ.
 */
typedef void (*sgemm_fn)(const char *, const char *, const void *, const void *, const void *,
                         const float *, const float *, const void *, const float *,
                         const void *, const float *, float *, const void *);
static sgemm_fn blas_sgemm;

void lstm_set_sgemm(void *fn) { blas_sgemm = (sgemm_fn)fn; }

/* row-major C (m×n) = op(A) op(B) + beta·C, op(X) = X or Xᵀ by ta, tb ('N' or 'T'). The sizes
 * go to sgemm_ as pointers to 64-bit integers: on a little-endian machine an LP64 BLAS reads
 * their low 32 bits and an ILP64 one all 64, the same value either way. */
static void gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                 const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    const float one = 1.0f;
    blas_sgemm(&tb, &ta, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc);
}

/* xh (n, F + H) ← [x, h] row by row; gates (n, 4H) ← xh·W (W (F + H, 4H) contiguous); then
 * lstm_forward. x and h are read with their row strides. */
void lstm_layer_forward(int64_t n, int64_t F, int64_t H, const float *x, int64_t x_stride,
                        const float *h, int64_t h_stride, const float *weight, const float *bias,
                        const float *scale, const float *c, int64_t c_stride, float *xh,
                        float *gates, float *c_new, float *tanh_c, float *h_new) {
    int64_t K = F + H;
    for (int64_t row = 0; row < n; row++) {
        memcpy(xh + row * K, x + row * x_stride, F * sizeof(float));
        memcpy(xh + row * K + F, h + row * h_stride, H * sizeof(float));
    }
    gemm('N', 'N', n, 4 * H, K, xh, K, weight, 4 * H, 0.0f, gates, 4 * H);
    lstm_forward(n, H, gates, bias, scale, c, c_stride, c_new, tanh_c, h_new);
}

/* lstm_backward (the same arguments, to d_bias), then d_weight (F + H, 4H) ← xhᵀ·dz and the
 * input gradient dz·Wᵀ: into d_xh (n, F + H) for `which` 3, only its x part (n, F) for 1, only
 * its h part (n, H) for 2, none for 0. */
void lstm_layer_backward(int64_t n, int64_t F, int64_t H, const float *dh, int64_t dh_stride,
                         const float *dh2, int64_t dh2_stride, const float *d_out,
                         const float *w_out, const float *dc, int64_t dc_stride,
                         const float *gates, const float *c, int64_t c_stride,
                         const float *tanh_c, float *dz, float *dc_prev, double *sums,
                         float *d_bias, const float *xh, const float *weight, float *d_weight,
                         float *d_xh, int64_t which) {
    int64_t K = F + H;
    lstm_backward(n, H, dh, dh_stride, dh2, dh2_stride, d_out, w_out, dc, dc_stride, gates, c,
                  c_stride, tanh_c, dz, dc_prev, sums, d_bias);
    gemm('T', 'N', K, 4 * H, n, xh, K, dz, 4 * H, 0.0f, d_weight, 4 * H);
    if (which == 3)
        gemm('N', 'T', n, K, 4 * H, dz, 4 * H, weight, 4 * H, 0.0f, d_xh, K);
    else if (which == 1)
        gemm('N', 'T', n, F, 4 * H, dz, 4 * H, weight, 4 * H, 0.0f, d_xh, F);
    else if (which == 2)
        gemm('N', 'T', n, H, 4 * H, dz, 4 * H, weight + F * 4 * H, 4 * H, 0.0f, d_xh, H);
}
