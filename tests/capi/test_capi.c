/* The C ABI from C: compiled as C99 with -pedantic-errors against libsparseflow.so, so the header
 * stays valid C and the exported functions are all a C program needs. Every function is called on
 * good input (results checked against a reference computed here) and on bad input (status and
 * message checked), and the last-error message is checked to be per thread. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "sparseflow/sparseflow.h"

static int g_checks = 0, g_failures = 0;

#define CHECK(cond)                                                                          \
  do {                                                                                       \
    ++g_checks;                                                                              \
    if (!(cond)) {                                                                           \
      ++g_failures;                                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n  last error: \"%s\"\n", __FILE__, __LINE__, \
              #cond, sf_last_error());                                                       \
    }                                                                                        \
  } while (0)

/* The call fails with `status` and the thread's message contains `text`. */
#define CHECK_FAILS(call, status, text)                                                          \
  do {                                                                                           \
    sf_status s_ = (call);                                                                       \
    ++g_checks;                                                                                  \
    if (s_ != (status) || strstr(sf_last_error(), (text)) == NULL) {                             \
      ++g_failures;                                                                              \
      fprintf(stderr,                                                                            \
              "%s:%d: %s\n  expected %s with a message containing \"%s\"\n"                      \
              "  got %s: \"%s\"\n",                                                              \
              __FILE__, __LINE__, #call, sf_status_string(status), (text), sf_status_string(s_), \
              sf_last_error());                                                                  \
    }                                                                                            \
  } while (0)

#define CHECK_OK(call)                 \
  do {                                 \
    sf_status s_ = (call);             \
    CHECK(s_ == SF_OK && #call);       \
    CHECK(sf_last_error()[0] == '\0'); \
  } while (0)

/* ---- helpers --------------------------------------------------------------------------------- */

static unsigned long long g_rng = 0x9e3779b97f4a7c15ull;
static float rnd(void) { /* uniform in [-1, 1), multiples of 1/1024: exact in fp16 */
  g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((int)((g_rng >> 33) % 2048u) - 1024) / 1024.0f;
}

/* fp16 <-> fp32 for the values this test uses: zero and normal numbers exact in fp16. */
static unsigned short to_half(float f) {
  unsigned int u;
  unsigned short sign;
  int exp;
  memcpy(&u, &f, 4);
  sign = (unsigned short)((u >> 16) & 0x8000u);
  if ((u & 0x7fffffffu) == 0) return sign;
  exp = (int)((u >> 23) & 0xff) - 127 + 15;
  return (unsigned short)(sign | (unsigned)(exp << 10) | ((u >> 13) & 0x3ffu));
}
static float from_half(unsigned short h) {
  unsigned int sign = (unsigned int)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  unsigned int u;
  float f;
  if (exp == 0) {
    f = ldexpf((float)mant, -24);
    return sign ? -f : f;
  }
  u = sign | ((exp + 112u) << 23) | (mant << 13);
  memcpy(&f, &u, 4);
  return f;
}

static int has_nonzero_over_2(const float* w, long rows, long cols) {
  long r, g;
  for (r = 0; r < rows; ++r)
    for (g = 0; g < cols / 4; ++g) {
      int nz = 0, j;
      for (j = 0; j < 4; ++j) nz += w[r * cols + 4 * g + j] != 0.0f;
      if (nz > 2) return 1;
    }
  return 0;
}

/* ---- status, version ------------------------------------------------------------------------- */

static void test_version_and_status(void) {
  char expect[32];
  int s, t;
  CHECK(sf_version() == SF_VERSION);
  CHECK(sf_version() / 10000 == SF_VERSION_MAJOR);
  sprintf(expect, "%d.%d.%d", SF_VERSION_MAJOR, SF_VERSION_MINOR, SF_VERSION_PATCH);
  CHECK(strcmp(sf_version_string(), expect) == 0);

  for (s = SF_OK; s <= SF_ERR_INTERNAL; ++s) {
    const char* name = sf_status_string((sf_status)s);
    CHECK(name != NULL && name[0] != '\0' && strcmp(name, "unknown status") != 0);
    for (t = SF_OK; t < s; ++t) CHECK(strcmp(name, sf_status_string((sf_status)t)) != 0);
  }
  CHECK(strcmp(sf_status_string(SF_OK), "ok") == 0);
  CHECK(strcmp(sf_status_string((sf_status)42), "unknown status") == 0);
  CHECK(strcmp(sf_status_string((sf_status)-1), "unknown status") == 0);
  CHECK(sf_last_error() != NULL);
}

/* ---- pruning and checking -------------------------------------------------------------------- */

/* 2 x 8, chosen so that magnitude and Wanda keep different elements. */
static const float kW[16] = {1, -5, 3, 0.5f, 2, 2, 2, 2, 0, 0, 0, 0, 7, -8, 1, -1};
static const float kNorms[8] = {10, 1, 1, 1, 1, 1, 1, 10};

static void test_prune(void) {
  /* Magnitude: the 2 largest |w|, ties to the lower index; an all-zero group stays zero. */
  static const float mag[16] = {0, -5, 3, 0, 2, 2, 0, 0, 0, 0, 0, 0, 7, -8, 0, 0};
  /* Wanda: |w| * norm, e.g. row 0 group 1 scores 2,2,2,20 keeps index 3 and then index 0. */
  static const float wanda[16] = {1, -5, 0, 0, 2, 0, 0, 2, 0, 0, 0, 0, 0, -8, 0, -1};
  float out[16], inplace[16];
  unsigned short h[16], hout[16];
  int i;

  CHECK_OK(sf_prune_24(kW, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, out));
  CHECK(memcmp(out, mag, sizeof mag) == 0);
  CHECK_OK(sf_prune_24(kW, SF_DTYPE_F32, 2, 8, SF_PRUNE_WANDA, kNorms, out));
  CHECK(memcmp(out, wanda, sizeof wanda) == 0);
  /* In place. */
  memcpy(inplace, kW, sizeof kW);
  CHECK_OK(sf_prune_24(inplace, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, inplace));
  CHECK(memcmp(inplace, mag, sizeof mag) == 0);
  /* fp16 follows the same choice. */
  for (i = 0; i < 16; ++i) h[i] = to_half(kW[i]);
  CHECK_OK(sf_prune_24(h, SF_DTYPE_F16, 2, 8, SF_PRUNE_MAGNITUDE, NULL, hout));
  for (i = 0; i < 16; ++i) CHECK(from_half(hout[i]) == mag[i]);

  /* Errors. */
  CHECK_FAILS(sf_prune_24(NULL, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "sf_prune_24: w is NULL");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, NULL),
              SF_ERR_INVALID_ARGUMENT, "out is NULL");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, -2, 8, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "negative");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_I32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "I32");
  CHECK_FAILS(sf_prune_24(kW, (sf_dtype)77, 2, 8, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "not an sf_dtype");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, 2, 8, (sf_prune_method)5, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "method is 5");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, 2, 8, SF_PRUNE_WANDA, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "act_norms");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, 4, 6, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_UNSUPPORTED_SHAPE, "sf_prune_24: ");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, 0, 8, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_UNSUPPORTED_SHAPE, "sf_prune_24: ");
  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, 1LL << 40, 1LL << 40, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "too large");
  memcpy(inplace, kW, sizeof kW);
  CHECK_FAILS(sf_prune_24(inplace, SF_DTYPE_F32, 1, 8, SF_PRUNE_MAGNITUDE, NULL, inplace + 4),
              SF_ERR_INVALID_ARGUMENT, "overlaps");
  /* A failed call leaves the output alone; a later success clears the message. */
  CHECK(memcmp(inplace, kW, sizeof kW) == 0);
  CHECK_OK(sf_prune_24(kW, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, out));
}

static void test_check(void) {
  float w[16];
  int is24 = -7;
  int64_t r = 99, g = 99;

  CHECK_OK(sf_check_24(kW, SF_DTYPE_F32, 2, 8, &is24, &r, &g));
  CHECK(is24 == 0 && r == 0 && g == 0);

  CHECK_OK(sf_prune_24(kW, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, w));
  CHECK_OK(sf_check_24(w, SF_DTYPE_F32, 2, 8, &is24, &r, &g));
  CHECK(is24 == 1 && r == -1 && g == -1);
  CHECK_OK(sf_check_24(w, SF_DTYPE_F32, 2, 8, &is24, NULL, NULL)); /* outputs are optional */
  CHECK(is24 == 1);

  w[1 * 8 + 6] = 5.0f; /* row 1, group 1 now holds 7, -8, 5 */
  CHECK_OK(sf_check_24(w, SF_DTYPE_F32, 2, 8, &is24, &r, &g));
  CHECK(is24 == 0 && r == 1 && g == 1);
  w[1 * 8 + 6] = NAN; /* NaN counts as nonzero */
  CHECK_OK(sf_check_24(w, SF_DTYPE_F32, 2, 8, &is24, &r, &g));
  CHECK(is24 == 0 && r == 1 && g == 1);

  CHECK_FAILS(sf_check_24(w, SF_DTYPE_F32, 2, 8, NULL, &r, &g), SF_ERR_INVALID_ARGUMENT,
              "sf_check_24: is_24 is NULL");
  CHECK_FAILS(sf_check_24(NULL, SF_DTYPE_F32, 2, 8, &is24, &r, &g), SF_ERR_INVALID_ARGUMENT,
              "w is NULL");
  CHECK_FAILS(sf_check_24(w, SF_DTYPE_F64, 2, 8, &is24, &r, &g), SF_ERR_INVALID_ARGUMENT, "F64");
  CHECK_FAILS(sf_check_24(w, SF_DTYPE_F32, 2, 7, &is24, &r, &g), SF_ERR_UNSUPPORTED_SHAPE,
              "sf_check_24: ");
}

/* ---- compression and the CPU GEMM ------------------------------------------------------------ */

enum { N = 37, K = 52, M = 3 }; /* neither a multiple of the 16 x 32 tile */

static void test_compress_fp32(void) {
  float w[N * K], pruned[N * K], back[N * K];
  sf_sparse24* h = (sf_sparse24*)&g_checks; /* must be overwritten */
  int64_t rows = 0, cols = 0, rp = 0, cp = 0;
  sf_dtype dt = SF_DTYPE_BOOL;
  size_t bytes = 0, vbytes = 0, mbytes = 0;
  const void* values = NULL;
  const uint32_t* meta = NULL;
  int i;

  for (i = 0; i < N * K; ++i) w[i] = rnd();
  CHECK_FAILS(sf_sparse24_compress(w, SF_DTYPE_F32, N, K, &h), SF_ERR_INVALID_ARGUMENT,
              "row 0"); /* names the first violation */
  CHECK(h == NULL);     /* set to NULL on failure */

  CHECK_OK(sf_prune_24(w, SF_DTYPE_F32, N, K, SF_PRUNE_MAGNITUDE, NULL, pruned));
  CHECK(!has_nonzero_over_2(pruned, N, K));
  CHECK_OK(sf_sparse24_compress(pruned, SF_DTYPE_F32, N, K, &h));
  CHECK(h != NULL);
  if (!h) return;

  CHECK_OK(sf_sparse24_shape(h, &rows, &cols));
  CHECK(rows == N && cols == K);
  CHECK_OK(sf_sparse24_shape(h, NULL, &cols));
  CHECK_OK(sf_sparse24_padded_shape(h, &rp, &cp));
  CHECK(rp == 48 && cp == 64);
  CHECK_OK(sf_sparse24_dtype(h, &dt));
  CHECK(dt == SF_DTYPE_F32);
  CHECK_OK(sf_sparse24_values(h, &values, &vbytes));
  CHECK(values != NULL && vbytes == (size_t)(48 * 64 / 2) * sizeof(float));
  CHECK_OK(sf_sparse24_meta(h, &meta, &mbytes));
  CHECK(meta != NULL && mbytes == (size_t)(48 / 16) * (64 / 32) * 16 * sizeof(uint32_t));
  CHECK_OK(sf_sparse24_compressed_bytes(h, &bytes));
  CHECK(bytes == vbytes + mbytes);

  memset(back, 0xff, sizeof back); /* poison: every element must be written */
  CHECK_OK(sf_sparse24_decompress(h, back));
  CHECK(memcmp(back, pruned, sizeof back) == 0);

  /* GEMM with every part of the epilogue, against a double-precision reference. */
  {
    float x[M * K], y[M * N], bias[N], res[M * N];
    unsigned short y16[M * N];
    int m, n, k;
    double max_err = 0.0, max_err16 = 0.0;
    for (i = 0; i < M * K; ++i) x[i] = rnd();
    for (i = 0; i < N; ++i) bias[i] = rnd();
    for (i = 0; i < M * N; ++i) res[i] = rnd();
    for (i = 0; i < M * N; ++i) y[i] = NAN;
    CHECK_OK(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, M, y, SF_DTYPE_F32, bias, SF_DTYPE_F32,
                                  SF_ACT_RELU, res, SF_DTYPE_F32));
    CHECK_OK(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, M, y16, SF_DTYPE_F16, bias, SF_DTYPE_F32,
                                  SF_ACT_RELU, res, SF_DTYPE_F32));
    for (m = 0; m < M; ++m)
      for (n = 0; n < N; ++n) {
        double acc = bias[n], e;
        for (k = 0; k < K; ++k) acc += (double)x[m * K + k] * pruned[n * K + k];
        acc = (acc > 0 ? acc : 0) + res[m * N + n];
        e = fabs(acc - y[m * N + n]);
        if (!(e <= max_err)) max_err = e; /* NaN (an unwritten output) propagates */
        /* fp16 rounding to nearest errs by at most half an ulp, |v| * 2^-11. */
        e = fabs(acc - from_half(y16[m * N + n])) - fabs(acc) / 2048;
        if (!(e <= max_err16)) max_err16 = e;
      }
    /* |x|, |w| <= 1 and K = 52: fp32 accumulation errs by well under 1e-4 absolute (about
     * K * 2^-24 * sum |x w| < 1e-5); the fp16 output adds its rounding on top. */
    CHECK(max_err < 1e-4);
    CHECK(max_err16 < 1e-4);

    /* m == 0 writes nothing and succeeds. */
    CHECK_OK(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, 0, y, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                  SF_ACT_NONE, NULL, SF_DTYPE_F32));

    CHECK_FAILS(sf_sparse24_gemm_cpu(NULL, x, SF_DTYPE_F32, M, y, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                     SF_ACT_NONE, NULL, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "sf_sparse24_gemm_cpu: the sf_sparse24 handle is NULL");
    CHECK_FAILS(sf_sparse24_gemm_cpu(h, NULL, SF_DTYPE_F32, M, y, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                     SF_ACT_NONE, NULL, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "x is NULL");
    CHECK_FAILS(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, -1, y, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                     SF_ACT_NONE, NULL, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "m is -1");
    CHECK_FAILS(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F64, M, y, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                     SF_ACT_NONE, NULL, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "x has dtype F64");
    CHECK_FAILS(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, M, y, SF_DTYPE_F32, bias, SF_DTYPE_I8,
                                     SF_ACT_NONE, NULL, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "bias has dtype I8");
    CHECK_FAILS(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, M, y, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                     (sf_activation)9, NULL, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "act is 9");
    CHECK_FAILS(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, 1, x + 1, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                     SF_ACT_NONE, NULL, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "y overlaps x");
    CHECK_FAILS(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, M, y, SF_DTYPE_F32, NULL, SF_DTYPE_F32,
                                     SF_ACT_NONE, y, SF_DTYPE_F32),
                SF_ERR_INVALID_ARGUMENT, "y overlaps residual");
  }

  CHECK_FAILS(sf_sparse24_shape(NULL, &rows, &cols), SF_ERR_INVALID_ARGUMENT, "handle is NULL");
  CHECK_FAILS(sf_sparse24_padded_shape(NULL, &rp, &cp), SF_ERR_INVALID_ARGUMENT, "handle is NULL");
  CHECK_FAILS(sf_sparse24_dtype(NULL, &dt), SF_ERR_INVALID_ARGUMENT, "handle is NULL");
  CHECK_FAILS(sf_sparse24_dtype(h, NULL), SF_ERR_INVALID_ARGUMENT, "dtype is NULL");
  CHECK_FAILS(sf_sparse24_compressed_bytes(h, NULL), SF_ERR_INVALID_ARGUMENT, "bytes is NULL");
  CHECK_FAILS(sf_sparse24_values(NULL, &values, &vbytes), SF_ERR_INVALID_ARGUMENT,
              "handle is NULL");
  CHECK_FAILS(sf_sparse24_meta(NULL, &meta, &mbytes), SF_ERR_INVALID_ARGUMENT, "handle is NULL");
  CHECK_FAILS(sf_sparse24_decompress(h, NULL), SF_ERR_INVALID_ARGUMENT,
              "sf_sparse24_decompress: out is NULL");
  CHECK_FAILS(sf_sparse24_compress(pruned, SF_DTYPE_F32, N, K, NULL), SF_ERR_INVALID_ARGUMENT,
              "out is NULL");
  CHECK_FAILS(sf_sparse24_compress(pruned, SF_DTYPE_U8, N, K, &h), SF_ERR_INVALID_ARGUMENT, "U8");
  CHECK(h == NULL);
  /* h was reset by the failing call above; compress again to exercise free on a real handle. */
  CHECK_OK(sf_sparse24_compress(pruned, SF_DTYPE_F32, N, K, &h));
  sf_sparse24_free(h);
  sf_sparse24_free(NULL);
}

static void test_compress_fp16(void) {
  unsigned short w[N * K], pruned[N * K], back[N * K], bias[N];
  float x[M * K], y[M * N], wf[N * K];
  sf_sparse24* h = NULL;
  sf_dtype dt = SF_DTYPE_F32;
  int i, m, n, k;
  double max_err = 0.0;

  for (i = 0; i < N * K; ++i) w[i] = to_half(rnd());
  for (i = 0; i < N; ++i) bias[i] = to_half(rnd());
  for (i = 0; i < M * K; ++i) x[i] = rnd();
  CHECK_OK(sf_prune_24(w, SF_DTYPE_F16, N, K, SF_PRUNE_MAGNITUDE, NULL, pruned));
  CHECK_OK(sf_sparse24_compress(pruned, SF_DTYPE_F16, N, K, &h));
  if (!h) return;
  CHECK_OK(sf_sparse24_dtype(h, &dt));
  CHECK(dt == SF_DTYPE_F16);
  memset(back, 0xff, sizeof back);
  CHECK_OK(sf_sparse24_decompress(h, back));
  CHECK(memcmp(back, pruned, sizeof back) == 0);

  /* fp16 weights and bias, fp32 x and y, SiLU. */
  CHECK_OK(sf_sparse24_gemm_cpu(h, x, SF_DTYPE_F32, M, y, SF_DTYPE_F32, bias, SF_DTYPE_F16,
                                SF_ACT_SILU, NULL, SF_DTYPE_F32));
  for (i = 0; i < N * K; ++i) wf[i] = from_half(pruned[i]);
  for (m = 0; m < M; ++m)
    for (n = 0; n < N; ++n) {
      double acc = from_half(bias[n]), e;
      for (k = 0; k < K; ++k) acc += (double)x[m * K + k] * wf[n * K + k];
      acc = acc / (1.0 + exp(-acc));
      e = fabs(acc - y[m * N + n]);
      if (!(e <= max_err)) max_err = e;
    }
  CHECK(max_err < 1e-4); /* fp32 accumulation and an fp32 SiLU on |acc| < 30 */
  sf_sparse24_free(h);
}

/* ---- the GPU linear layer ------------------------------------------------------------------- */
/* This program does not link the CUDA runtime, so it has no device memory to hand the GPU
 * functions: it checks what they say without a GPU path, and with one the handle's life and the
 * refusal of host pointers (tests/python/test_torch.py runs the kernels through PyTorch). */

static void test_cuda_linear(void) {
  unsigned short w[N * K], pruned[N * K], x[M * K], y[M * N];
  sf_sparse24* h = NULL;
  sf_cuda_linear* lin = (sf_cuda_linear*)&g_checks; /* must be overwritten */
  int64_t rows = 0, cols = 0;
  sf_dtype dt = SF_DTYPE_BOOL;
  int device = -2, i;
  size_t bytes = 0;
  sf_status s;

  for (i = 0; i < N * K; ++i) w[i] = to_half(rnd());
  for (i = 0; i < M * K; ++i) x[i] = to_half(rnd());
  CHECK_OK(sf_prune_24(w, SF_DTYPE_F16, N, K, SF_PRUNE_MAGNITUDE, NULL, pruned));
  CHECK_OK(sf_sparse24_compress(pruned, SF_DTYPE_F16, N, K, &h));
  if (!h) return;

  s = sf_cuda_check();
  CHECK(s == SF_OK || s == SF_ERR_NO_DEVICE);
  if (s != SF_OK) {
    CHECK(strncmp(sf_last_error(), "sf_cuda_check: ", 15) == 0 && strlen(sf_last_error()) > 40);
    printf("test_capi: no GPU path (%s); checking that the GPU functions say so\n",
           sf_last_error());
    CHECK_FAILS(sf_cuda_linear_create(h, -1, NULL, &lin), SF_ERR_NO_DEVICE, "sf_cuda_linear_create: ");
    CHECK(lin == NULL);
    lin = (sf_cuda_linear*)&g_checks;
    CHECK_FAILS(sf_cuda_linear_create_dense(w, SF_DTYPE_F16, N, K, 0, SF_PRUNE_MAGNITUDE, NULL, -1,
                                            NULL, &lin),
                SF_ERR_NO_DEVICE, "sf_cuda_linear_create_dense: ");
    CHECK(lin == NULL);
  } else {
    CHECK(sf_last_error()[0] == '\0');
    CHECK_OK(sf_cuda_linear_create(h, -1, NULL, &lin));
    if (lin) {
      CHECK_OK(sf_cuda_linear_info(lin, &rows, &cols, &dt, &device, &bytes));
      CHECK(rows == N && cols == K && dt == SF_DTYPE_F16 && device >= 0 && bytes > 0);
      CHECK_OK(sf_cuda_linear_forward(lin, x, SF_DTYPE_F16, 0, y, SF_DTYPE_F16, NULL, SF_DTYPE_F32,
                                      SF_ACT_NONE, NULL, SF_DTYPE_F32, NULL)); /* m = 0: nothing */
      CHECK_FAILS(sf_cuda_linear_forward(lin, x, SF_DTYPE_F16, M, y, SF_DTYPE_F16, NULL,
                                         SF_DTYPE_F32, SF_ACT_NONE, NULL, SF_DTYPE_F32, NULL),
                  SF_ERR_INVALID_ARGUMENT, "is host memory");
      CHECK_FAILS(sf_cuda_linear_forward(lin, x, SF_DTYPE_BF16, M, y, SF_DTYPE_F16, NULL,
                                         SF_DTYPE_F32, SF_ACT_NONE, NULL, SF_DTYPE_F32, NULL),
                  SF_ERR_INVALID_ARGUMENT, "x has dtype BF16, but the weight is F16");
      CHECK_FAILS(sf_cuda_linear_decompress(lin, w, NULL), SF_ERR_INVALID_ARGUMENT,
                  "is host memory");
      sf_cuda_linear_free(lin);
    }
    lin = NULL;
    CHECK_OK(sf_cuda_linear_create_dense(w, SF_DTYPE_F16, N, K, 0, SF_PRUNE_MAGNITUDE, NULL, -1,
                                         NULL, &lin));
    sf_cuda_linear_free(lin);
    lin = (sf_cuda_linear*)&g_checks;
    CHECK_FAILS(sf_cuda_linear_create_dense(w, SF_DTYPE_F32, N, K, 0, SF_PRUNE_MAGNITUDE, NULL,
                                            -1, NULL, &lin),
                SF_ERR_UNSUPPORTED_SHAPE, "F16 or BF16");
    CHECK(lin == NULL);
    CHECK_FAILS(sf_cuda_linear_create_dense(w, SF_DTYPE_F16, N, K, 0, SF_PRUNE_WANDA, NULL, -1,
                                            NULL, &lin),
                SF_ERR_INVALID_ARGUMENT, "act_norms");
  }
  CHECK(sf_cuda_linear_forward(NULL, x, SF_DTYPE_F16, M, y, SF_DTYPE_F16, NULL, SF_DTYPE_F32,
                               SF_ACT_NONE, NULL, SF_DTYPE_F32, NULL) != SF_OK);
  CHECK(sf_last_error()[0] != '\0');
  sf_cuda_linear_free(NULL);
  sf_cuda_release_workspaces();
  sf_sparse24_free(h);
}

/* ---- sessions -------------------------------------------------------------------------------- */

typedef struct {
  int calls, stop_after; /* stop_after > 0: return non-zero on that call */
  size_t text_len;
  char text[8192];
} token_log;

static int log_token(void* user, int32_t token, const char* text) {
  token_log* log = (token_log*)user;
  size_t n = strlen(text);
  (void)token;
  ++log->calls;
  if (log->text_len + n < sizeof log->text) {
    memcpy(log->text + log->text_len, text, n + 1);
    log->text_len += n;
  }
  return log->stop_after > 0 && log->calls >= log->stop_after;
}

/* The number array after "key": in a JSON object, copied to out (at most cap chars); its entries.
 */
static int json_array(const char* json, const char* key, char* out, size_t cap) {
  char pattern[64];
  const char *b, *e;
  int n = 0;
  snprintf(pattern, sizeof pattern, "\"%s\":[", key);
  b = strstr(json, pattern);
  out[0] = '\0';
  if (!b) return -1;
  b += strlen(pattern);
  e = strchr(b, ']');
  if (!e || (size_t)(e - b) >= cap) return -1;
  memcpy(out, b, (size_t)(e - b));
  out[e - b] = '\0';
  if (e > b) {
    const char* c;
    for (n = 1, c = b; c < e; ++c) n += *c == ',';
  }
  return n;
}

static void test_session(void) {
  char dir[] = "/tmp/sf_capi_session_XXXXXX", path[256], first_ids[4096], ids_json[4096],
       keep[8192];
  sf_session_options o;
  sf_generate_params p;
  sf_session* s = NULL;
  const char* json = NULL;
  token_log log;
  int32_t ids[64];
  size_t n = 0;
  double ppl = 0, ppl_ids = 0;
  const int32_t prompt[3] = {2, 5, 7};

  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/builtin.sf", dir);
  CHECK_OK(sf_synth_builtin(path, 0));
  CHECK_FAILS(sf_synth_builtin(path, 0), SF_ERR_INVALID_ARGUMENT, "exists");
  CHECK_OK(sf_synth_builtin(path, 1)); /* force: replaced */
  CHECK_FAILS(sf_synth_builtin(NULL, 0), SF_ERR_INVALID_ARGUMENT, "out_path is NULL");

  CHECK_OK(sf_session_options_init(&o));
  CHECK(o.struct_size == sizeof o && o.device == NULL && o.gpu_memory == NULL &&
        o.gpu_cache_ratio < 0);
  o.device = "cpu";
  CHECK_OK(sf_session_open(path, &o, &s));
  if (!s) return;
  CHECK_OK(sf_session_info_json(s, &json));
  CHECK(strstr(json, "\"architecture\":\"opt\"") && strstr(json, "\"layers\":2") &&
        strstr(json, "\"hidden\":64") && strstr(json, "\"device\":\"cpu\"") &&
        strstr(json, "\"weights\":\"dense\"") && strstr(json, "\"offloaded\":false") &&
        strstr(json, "\"has_tokenizer\":true"));

  /* Greedy generation: one callback per new token, the same tokens every time. */
  CHECK_OK(sf_generate_params_init(&p));
  CHECK(p.struct_size == sizeof p && p.greedy == 1 && p.max_new_tokens == 32);
  p.max_new_tokens = 8;
  memset(&log, 0, sizeof log);
  CHECK_OK(sf_session_generate(s, "Hello world", &p, log_token, &log, &json));
  CHECK(json_array(json, "ids", first_ids, sizeof first_ids) == log.calls && log.calls >= 1);
  CHECK(strstr(json, "\"stopped_by\":\"max_tokens\"") || strstr(json, "\"stopped_by\":\"eos\""));
  CHECK(json_array(json, "prompt_ids", ids_json, sizeof ids_json) >= 2 &&
        strncmp(ids_json, "2,", 2) == 0);
  CHECK_OK(sf_session_generate(s, "Hello world", &p, NULL, NULL, &json));
  CHECK(json_array(json, "ids", ids_json, sizeof ids_json) == log.calls &&
        strcmp(ids_json, first_ids) == 0);

  /* A callback that asks to stop after 3 tokens: SF_OK, 3 tokens, and the session goes on working.
   */
  memset(&log, 0, sizeof log);
  log.stop_after = 3;
  CHECK_OK(sf_session_generate(s, "Hello world", &p, log_token, &log, &json));
  CHECK(log.calls == 3 && strstr(json, "\"stopped_by\":\"callback\""));
  CHECK(json_array(json, "ids", ids_json, sizeof ids_json) == 3);
  CHECK(strncmp(ids_json, first_ids, strlen(ids_json)) == 0); /* the first 3 of the full run */
  CHECK_OK(sf_session_generate(s, "Hello world", &p, NULL, NULL, &json));
  CHECK(json_array(json, "ids", ids_json, sizeof ids_json) >= 1 &&
        strcmp(ids_json, first_ids) == 0);

  CHECK_OK(sf_session_generate_ids(s, prompt, 3, NULL, NULL, NULL, &json));
  CHECK(json_array(json, "prompt_ids", ids_json, sizeof ids_json) == 3 &&
        strcmp(ids_json, "2,5,7") == 0);
  CHECK_FAILS(sf_session_generate_ids(s, prompt, 0, NULL, NULL, NULL, &json),
              SF_ERR_INVALID_ARGUMENT, "n is 0");
  p.greedy = 0;
  p.temperature = 0;
  CHECK_FAILS(sf_session_generate(s, "x", &p, NULL, NULL, &json), SF_ERR_INVALID_ARGUMENT,
              "temperature");
  p.struct_size = sizeof p + 8;
  CHECK_FAILS(sf_session_generate(s, "x", &p, NULL, NULL, &json), SF_ERR_INVALID_ARGUMENT,
              "newer sparseflow.h");

  /* Tokens: ask for the count, then fetch; BOS first; detokenize inverts the rest. */
  CHECK_OK(sf_session_tokenize(s, "Hello world", 1, NULL, 0, &n));
  CHECK(n >= 2 && n <= 64);
  CHECK_FAILS(sf_session_tokenize(s, "Hello world", 1, ids, 1, &n), SF_ERR_INVALID_ARGUMENT,
              "room for 1");
  CHECK_OK(sf_session_tokenize(s, "Hello world", 1, ids, 64, &n));
  CHECK(ids[0] == 2);
  CHECK_OK(sf_session_detokenize(s, ids + 1, n - 1, &json));
  CHECK(strcmp(json, "Hello world") == 0);
  CHECK_FAILS(sf_session_detokenize(s, prompt, 0, NULL), SF_ERR_INVALID_ARGUMENT, "text is NULL");

  /* Perplexity of a text is that of its ids (BOS first). */
  snprintf(keep, sizeof keep, "The quick brown fox jumps over the lazy dog, again and again.");
  CHECK_OK(sf_session_perplexity(s, keep, 0, &ppl));
  CHECK_OK(sf_session_tokenize(s, keep, 1, ids, 64, &n));
  CHECK_OK(sf_session_perplexity_ids(s, ids, n, 0, &ppl_ids));
  CHECK(ppl > 1 && isfinite(ppl) && ppl == ppl_ids);
  CHECK_OK(sf_session_perplexity_ids(s, ids, n, 4, &ppl_ids)); /* windows of 4 score differently */
  CHECK(ppl_ids != ppl && isfinite(ppl_ids));
  CHECK_FAILS(sf_session_perplexity_ids(s, ids, 1, 0, &ppl), SF_ERR_INVALID_ARGUMENT,
              "at least 2 tokens");

  CHECK_FAILS(sf_session_offload_stats_json(s, &json), SF_ERR_NOT_FOUND, "not offloaded");
  sf_session_free(s);
  sf_session_free(NULL);

  /* Bad options say what is wrong; *out stays NULL. */
  s = (sf_session*)&g_checks;
  CHECK_FAILS(sf_session_open(NULL, NULL, &s), SF_ERR_INVALID_ARGUMENT, "path is NULL");
  CHECK(s == NULL);
  o.device = "tpu";
  CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_INVALID_ARGUMENT, "expected cpu, cuda or auto");
  o.device = "cpu";
  o.offload_policy = "fetch";
  CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_INVALID_ARGUMENT, "set gpu_memory");
  o.offload_policy = NULL;
  o.gpu_memory = "1GiB";
  CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_INVALID_ARGUMENT, "device cuda or auto");
  o.device = "auto";
  o.gpu_memory = "lots";
  CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_INVALID_ARGUMENT, "gpu_memory");
  o.gpu_memory = "1GiB";
  o.gpu_cache_ratio = 1.5;
  CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_INVALID_ARGUMENT, "[0, 1]");
  o.gpu_cache_ratio = -1;
  o.predictor = "oracle";
  CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_INVALID_ARGUMENT, "expected model or exact");
  o.predictor = NULL;
  o.struct_size = 0;
  CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_INVALID_ARGUMENT, "struct_size");
  snprintf(keep, sizeof keep, "%s/missing.sf", dir);
  CHECK(sf_session_open(keep, NULL, &s) != SF_OK && s == NULL &&
        strstr(sf_last_error(), "missing.sf"));

  /* A caller built against an older header: only the fields before gpu_memory, the rest defaults.
   */
  CHECK_OK(sf_session_options_init(&o));
  o.struct_size = offsetof(sf_session_options, gpu_memory);
  o.device = "cpu";
  o.gpu_memory = "not read"; /* beyond the struct_size given */
  CHECK_OK(sf_session_open(path, &o, &s));
  sf_session_free(s);

  if (sf_backend_check("cuda") != SF_OK) { /* no GPU here: cuda and offloading say why */
    o.struct_size = sizeof o;
    o.gpu_memory = NULL;
    o.device = "cuda";
    CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_NO_DEVICE, "needs a CUDA GPU");
    o.device = "auto";
    o.gpu_memory = "1GiB";
    CHECK_FAILS(sf_session_open(path, &o, &s), SF_ERR_NO_DEVICE, "needs a CUDA GPU");
    o.gpu_memory = NULL;
    CHECK_OK(sf_session_open(path, &o, &s)); /* auto without a GPU: the CPU */
    CHECK_OK(sf_session_info_json(s, &json));
    CHECK(strstr(json, "\"device\":\"cpu\"") != NULL);
    sf_session_free(s);
  } else { /* a GPU: the whole tiny model fits a 1 GiB budget; offloaded stats exist */
    o.struct_size = sizeof o;
    o.device = "cuda";
    o.gpu_memory = "1GiB";
    o.predictor = "exact"; /* the built-in model has no calibrated predictors */
    o.collect_stats = 1;
    CHECK_OK(sf_session_open(path, &o, &s));
    if (s) {
      CHECK_OK(sf_session_generate_ids(s, prompt, 3, NULL, NULL, NULL, &json));
      CHECK_OK(sf_session_offload_stats_json(s, &json));
      CHECK(strstr(json, "\"tokens\"") != NULL);
      CHECK_OK(sf_session_info_json(s, &json));
      CHECK(strstr(json, "\"device\":\"cuda\"") && strstr(json, "\"offloaded\":true"));
      sf_session_free(s);
    }
  }
  remove(path);
  rmdir(dir);
}

/* ---- the last-error message is per thread
 * ----------------------------------------------------------- */

typedef struct {
  int which;
  pthread_barrier_t* barrier;
  int failures;
} worker_arg;

static void* worker(void* p) {
  worker_arg* a = (worker_arg*)p;
  char mine[512];
  float out[16];
  int is24 = 0;
  sf_status s;
  if (a->which == 0)
    s = sf_prune_24(NULL, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, out);
  else
    s = sf_check_24(kW, SF_DTYPE_I64, 2, 8, &is24, NULL, NULL);
  if (s != SF_ERR_INVALID_ARGUMENT) ++a->failures;
  strncpy(mine, sf_last_error(), sizeof mine - 1);
  mine[sizeof mine - 1] = '\0';
  if (strstr(mine, a->which == 0 ? "w is NULL" : "I64") == NULL) ++a->failures;

  pthread_barrier_wait(a->barrier); /* both threads have failed, differently */
  if (strcmp(sf_last_error(), mine) != 0) ++a->failures;
  pthread_barrier_wait(a->barrier);
  if (a->which == 0) { /* thread 0 succeeds; thread 1 must keep its message */
    if (sf_prune_24(kW, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, out) != SF_OK) ++a->failures;
    if (sf_last_error()[0] != '\0') ++a->failures;
  }
  pthread_barrier_wait(a->barrier);
  if (a->which == 1 && strcmp(sf_last_error(), mine) != 0) ++a->failures;
  return NULL;
}

static void test_thread_local_error(void) {
  pthread_t t[2];
  pthread_barrier_t barrier;
  worker_arg args[2];
  char main_msg[512];
  float out[16];
  int i;

  CHECK_FAILS(sf_prune_24(kW, SF_DTYPE_F32, -1, 8, SF_PRUNE_MAGNITUDE, NULL, out),
              SF_ERR_INVALID_ARGUMENT, "negative");
  strncpy(main_msg, sf_last_error(), sizeof main_msg - 1);
  main_msg[sizeof main_msg - 1] = '\0';

  pthread_barrier_init(&barrier, NULL, 2);
  for (i = 0; i < 2; ++i) {
    args[i].which = i;
    args[i].barrier = &barrier;
    args[i].failures = 0;
    CHECK(pthread_create(&t[i], NULL, worker, &args[i]) == 0);
  }
  for (i = 0; i < 2; ++i) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&barrier);
  CHECK(args[0].failures == 0);
  CHECK(args[1].failures == 0);
  CHECK(strcmp(sf_last_error(), main_msg) == 0); /* untouched by the workers */
}

int main(void) {
  test_version_and_status();
  test_prune();
  test_check();
  test_compress_fp32();
  test_compress_fp16();
  test_cuda_linear();
  test_session();
  test_thread_local_error();
  printf("test_capi: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
