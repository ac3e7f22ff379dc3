/* localet's compiled kernels: the CSR x dense product of the torch-free weighted back-projection,
 * the one-pass statistics of the MRC writer, and the bicubic resampling of raw views into the
 * aligned frame. Loaded with ctypes (localet_core/native.py), which releases the GIL during each
 * call, so threads run them in parallel. Built by setup.py as an optional extension: without a C
 * compiler localet uses scipy's, numpy's and torch's equivalents.
 */
#include <math.h>
#include <stdint.h>

#define LOCALET_BLOCK 16

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define LOCALET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LOCALET_CLONES
#endif

#if defined(_WIN32)
#define LOCALET_EXPORT __declspec(dllexport)
#else
#define LOCALET_EXPORT __attribute__((visibility("default")))
#endif

/* Raised when a function's arguments or meaning change; native.py checks it. */
LOCALET_EXPORT int localet_native_abi(void) { return 3; }

/* out[r, :] = sum_k data[k] * dense[indices[k], :] for r in [r0, r1), k in [indptr[r], indptr[r + 1]).
 *
 * float32 values, int32 indices, C-contiguous dense (n_cols, n) and out (n_rows, n). Each output
 * element is summed over k in order from zero, as scipy's csr_matvecs does, so both give the same
 * floats (no fused multiply-add: the "avx2" clone vectorises the 16 accumulators without changing
 * the rounding). The 16 accumulators of a block of columns stay in registers over the row's
 * non-zeros, where scipy's kernel reads and writes its output once per non-zero. */
LOCALET_CLONES
LOCALET_EXPORT void localet_csr_spmm_f32(int64_t r0, int64_t r1, const int32_t *indptr,
                                         const int32_t *indices, const float *data,
                                         const float *restrict dense, int64_t n, float *restrict out)
{
    for (int64_t r = r0; r < r1; ++r) {
        const int32_t a = indptr[r], b = indptr[r + 1];
        float *restrict o = out + r * n;
        int64_t j = 0;
        for (; j + LOCALET_BLOCK <= n; j += LOCALET_BLOCK) {
            float acc[LOCALET_BLOCK] = {0.0f};
            for (int32_t k = a; k < b; ++k) {
                const float w = data[k];
                const float *restrict x = dense + (int64_t)indices[k] * n + j;
                for (int t = 0; t < LOCALET_BLOCK; ++t) acc[t] += w * x[t];
            }
            for (int t = 0; t < LOCALET_BLOCK; ++t) o[j + t] = acc[t];
        }
        for (; j < n; ++j) {
            float acc = 0.0f;
            for (int32_t k = a; k < b; ++k) acc += data[k] * dense[(int64_t)indices[k] * n + j];
            o[j] = acc;
        }
    }
}

/* Statistics of n float32 values in one pass: result = {min, max, sum of (x - shift), sum of
 * (x - shift)^2}, the sums in double (8 interleaved partial sums each). With shift near the mean
 * (the caller passes the first value's, or a running mean) the shifted sums lose nothing to
 * cancellation. Returns 1 if a value is NaN or infinite (result then unspecified), else 0. */
LOCALET_CLONES
LOCALET_EXPORT int localet_stats_f32(const float *restrict x, int64_t n, double shift, double *restrict result)
{
    float lo = INFINITY, hi = -INFINITY;
    double s[8] = {0}, q[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int t = 0; t < 8; ++t) {
            const float v = x[i + t];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            const double d = (double)v - shift;
            s[t] += d;
            q[t] += d * d;
        }
    }
    for (; i < n; ++i) {
        const float v = x[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        const double d = (double)v - shift;
        s[0] += d;
        q[0] += d * d;
    }
    double ss = 0.0, qq = 0.0;
    for (int t = 0; t < 8; ++t) {
        ss += s[t];
        qq += q[t];
    }
    result[0] = lo;
    result[1] = hi;
    result[2] = ss;
    result[3] = qq;
    /* NaN fails every comparison, so it never enters lo/hi: look at the sums, which it poisons */
    return !(isfinite(lo) && isfinite(hi) && isfinite(ss) && isfinite(qq)) && n > 0;
}

/* torch's bicubic convolution weights (Keys, A = -0.75), as grid_sample computes them. */
static inline void localet_cubic_weights(double t, double w[4])
{
    const double A = -0.75;
    double x = t + 1.0;
    w[0] = ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    x = t;
    w[1] = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    x = 1.0 - t;
    w[2] = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    x = 2.0 - t;
    w[3] = ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
}

/* out[r, c] = fill + bicubic interpolant of (src - fill) at (col, row) = map @ (c, r, 1), with
 * zeros beyond src's edge: torch's grid_sample(mode="bicubic", padding_mode="zeros") of the
 * centred image at the same source positions (localet_core.alignment.resample), the positions in
 * double precision (torch's affine_grid rounds them to float32: about 3e-5 pixel at 512).
 * src (h, w) and out (ho, wo) C-contiguous float32; map: 6 doubles, row-major (2, 3). */
LOCALET_EXPORT void localet_resample_bicubic_f32(const float *restrict src, int64_t h, int64_t w,
                                                 const double *map, float fill, float *restrict out,
                                                 int64_t ho, int64_t wo)
{
    for (int64_t r = 0; r < ho; ++r) {
        for (int64_t c = 0; c < wo; ++c) {
            const double x = map[0] * (double)c + map[1] * (double)r + map[2];
            const double y = map[3] * (double)c + map[4] * (double)r + map[5];
            const double fx = floor(x), fy = floor(y);
            double wx[4], wy[4];
            localet_cubic_weights(x - fx, wx);
            localet_cubic_weights(y - fy, wy);
            const int64_t x0 = (int64_t)fx - 1, y0 = (int64_t)fy - 1;
            /* fill + sum w (v - fill) over the pixels inside, as sum w v + fill (1 - sum w): a
             * whole-pixel position (weights 0, 1, 0, 0) then gives the pixel itself exactly */
            double acc = 0.0, mass = 0.0;
            if (x0 >= 0 && x0 + 3 < w && y0 >= 0 && y0 + 3 < h) {
                for (int i = 0; i < 4; ++i) {
                    const float *row = src + (y0 + i) * w + x0;
                    acc += wy[i] * (wx[0] * row[0] + wx[1] * row[1] + wx[2] * row[2] + wx[3] * row[3]);
                    mass += wy[i] * (wx[0] + wx[1] + wx[2] + wx[3]);
                }
            } else if (x0 + 3 >= 0 && x0 < w && y0 + 3 >= 0 && y0 < h) {
                for (int i = 0; i < 4; ++i) {
                    const int64_t yy = y0 + i;
                    if (yy < 0 || yy >= h) continue;
                    const float *row = src + yy * w;
                    double line = 0.0, lmass = 0.0;
                    for (int j = 0; j < 4; ++j) {
                        const int64_t xx = x0 + j;
                        if (xx >= 0 && xx < w) {
                            line += wx[j] * row[xx];
                            lmass += wx[j];
                        }
                    }
                    acc += wy[i] * line;
                    mass += wy[i] * lmass;
                }
            }
            out[r * wo + c] = (float)(acc + (double)fill * (1.0 - mass));
        }
    }
}

/* A module object's init, so that the file is also a valid (empty) extension module for build
 * tools that check for one; localet never imports it. */
#ifdef LOCALET_PYTHON_MODULE
#include <Python.h>
static struct PyModuleDef localet_native_module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&localet_native_module); }
#endif
