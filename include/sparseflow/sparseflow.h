/* SparseFlow's stable C ABI (C99).
 *
 * Conventions, for every function declared here:
 *  - Functions return sf_status and never let a C++ exception cross the boundary. The exceptions
 *    are the pure queries sf_version, sf_version_string, sf_status_string, sf_last_error and the
 *    destructors sf_sparse24_free, sf_cuda_linear_free, sf_cuda_release_workspaces and
 *    sf_session_free.
 *  - Every function that returns sf_status sets this thread's last-error message: to "" when it
 *    returns SF_OK, otherwise to a sentence naming the function, what was expected and what was
 *    found. sf_last_error() reads it; other threads never see it.
 *  - NULL pointers, negative sizes, sizes whose byte count overflows and enum values out of range
 *    are SF_ERR_INVALID_ARGUMENT. Shapes that are well-formed but that 2:4 sparsity cannot take
 *    (K not a multiple of 4, an empty matrix) are SF_ERR_UNSUPPORTED_SHAPE.
 *  - Matrices are dense and row-major. W is [rows, cols] = [N, K] for y = x W^T: the 2:4 groups
 *    run along cols (K), 4 consecutive elements per group.
 *  - Handles are opaque; a handle may be read from several threads at once, but must not be freed
 *    while another thread uses it.
 *
 * Values of the enums are part of the ABI and never change meaning.
 */
#ifndef SPARSEFLOW_SPARSEFLOW_H
#define SPARSEFLOW_SPARSEFLOW_H

#include <stddef.h>
#include <stdint.h>

/* SF_API marks the exported functions. The library is linked with -fvisibility=hidden and a
 * version script, so nothing else (no C++ symbol of the engine) is visible from outside. */
#if defined(_WIN32)
#if defined(SF_BUILDING_LIBRARY)
#define SF_API __declspec(dllexport)
#else
#define SF_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define SF_API __attribute__((visibility("default")))
#else
#define SF_API
#endif

/* The version of these headers. sf_version() reports the library actually loaded; a program
 * should check that its major part equals SF_VERSION_MAJOR. */
#define SF_VERSION_MAJOR 0
#define SF_VERSION_MINOR 1
#define SF_VERSION_PATCH 0
/* Encoded as major * 10000 + minor * 100 + patch, the same encoding sf_version() returns. */
#define SF_VERSION (SF_VERSION_MAJOR * 10000 + SF_VERSION_MINOR * 100 + SF_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status and errors ----------------------------------------------------------------------- */

/* Mirrors sf::Status in src/core/error.hpp value for value. */
typedef enum sf_status {
  SF_OK = 0,
  SF_ERR_INVALID_ARGUMENT = 1,  /* a caller passed something malformed (shape, dtype, NULL) */
  SF_ERR_UNSUPPORTED_SHAPE = 2, /* well-formed, but the format or kernel cannot take it */
  SF_ERR_IO = 3,                /* a file could not be opened, read or written */
  SF_ERR_FORMAT = 4,            /* a file's contents are damaged or lie */
  SF_ERR_OUT_OF_MEMORY = 5,
  SF_ERR_CUDA = 6,      /* a CUDA / cuBLAS / cuSPARSELt call failed */
  SF_ERR_NO_DEVICE = 7, /* a GPU was asked for and none is usable */
  SF_ERR_NOT_FOUND = 8, /* a named tensor, key or file is missing */
  SF_ERR_INTERNAL = 9
} sf_status;

/* A short constant name for a status ("invalid argument"); "unknown status" for other values. */
SF_API const char* sf_status_string(sf_status status);

/* This thread's message from its last call that returns sf_status: "" when that call succeeded.
 * Never NULL. The pointer stays valid until this thread's next call into the library. */
SF_API const char* sf_last_error(void);

/* ---- version --------------------------------------------------------------------------------- */

/* The loaded library's version, encoded like SF_VERSION. */
SF_API int sf_version(void);
/* The loaded library's version as "MAJOR.MINOR.PATCH"; static storage. */
SF_API const char* sf_version_string(void);

/* ---- backends -------------------------------------------------------------------------------- */

/* The backends built into this library, comma-separated in a fixed order ("cpu" or "cpu,cuda");
 * static storage. Built in is not usable: ask sf_backend_check. */
SF_API const char* sf_backends(void);
/* SF_OK when backend `name` ("cpu", "cuda") can run here now; SF_ERR_NO_DEVICE when it is not
 * built in or has no usable device, with the reason in sf_last_error(); SF_ERR_INVALID_ARGUMENT
 * for a name this library does not know. */
SF_API sf_status sf_backend_check(const char* name);

/* ---- element types and options --------------------------------------------------------------- */

/* Mirrors sf::DType in src/core/dtype.hpp. The 2:4 functions take F32, F16 and BF16 (F16 is IEEE
 * binary16, BF16 the top half of a binary32, both passed as 16-bit words); the other values exist
 * so that callers can name any tensor type, and are rejected with SF_ERR_INVALID_ARGUMENT. */
typedef enum sf_dtype {
  SF_DTYPE_F32 = 0,
  SF_DTYPE_F16 = 1,
  SF_DTYPE_BF16 = 2,
  SF_DTYPE_F64 = 3,
  SF_DTYPE_I8 = 4,
  SF_DTYPE_U8 = 5,
  SF_DTYPE_I16 = 6,
  SF_DTYPE_I32 = 7,
  SF_DTYPE_I64 = 8,
  SF_DTYPE_BOOL = 9
} sf_dtype;

/* How sf_prune_24 chooses the 2 elements of each group of 4 that it keeps. */
typedef enum sf_prune_method {
  SF_PRUNE_MAGNITUDE = 0, /* the 2 largest |w|; ties go to the lower index */
  SF_PRUNE_WANDA = 1      /* the 2 largest |w_ij| * act_norms[j] (Wanda-style, activation-aware) */
} sf_prune_method;

/* Applied to x W^T + bias before the residual is added. */
typedef enum sf_activation {
  SF_ACT_NONE = 0,
  SF_ACT_RELU = 1,
  SF_ACT_GELU = 2, /* exact erf form */
  SF_ACT_SILU = 3
} sf_activation;

/* ---- 2:4 pruning and validation -------------------------------------------------------------- */

/* Prune w [rows, cols] to 2:4 along cols and write the dense result (same dtype and shape) to out.
 * out may be w itself (in place); other overlaps are not allowed. act_norms has cols entries (the
 * L2 norm of each input channel over calibration tokens) and is required for SF_PRUNE_WANDA,
 * ignored (may be NULL) for SF_PRUNE_MAGNITUDE. NaN counts as larger than any number, so it is kept
 * and shows up downstream; +-Inf counts as larger than any finite value. */
SF_API sf_status sf_prune_24(const void* w, sf_dtype dtype, int64_t rows, int64_t cols,
                             sf_prune_method method, const float* act_norms, void* out);

/* Set *is_24 to 1 when every group of 4 along cols of w holds at most 2 nonzeros (NaN counts as
 * nonzero), else 0. first_row and first_group (each may be NULL) receive the first violating row
 * and group in row-major order (the group covers columns [4*group, 4*group+4)), or -1 when w is
 * 2:4. */
SF_API sf_status sf_check_24(const void* w, sf_dtype dtype, int64_t rows, int64_t cols, int* is_24,
                             int64_t* first_row, int64_t* first_group);

/* ---- compressed 2:4 matrices ----------------------------------------------------------------- */

/* A compressed 2:4 matrix: values + metadata in the layout the sparse tensor cores consume
 * (docs/SPARSE24.md). Immutable once made. */
typedef struct sf_sparse24 sf_sparse24;

/* Compress w [rows, cols], which must already be 2:4 (else SF_ERR_INVALID_ARGUMENT naming the first
 * violating row and group). On success *out is a new handle, to be released with sf_sparse24_free;
 * on failure *out is set to NULL. */
SF_API sf_status sf_sparse24_compress(const void* w, sf_dtype dtype, int64_t rows, int64_t cols,
                                      sf_sparse24** out);
/* Release a handle. NULL is allowed and does nothing. */
SF_API void sf_sparse24_free(sf_sparse24* h);

/* The logical dense shape [rows, cols] = [N, K]. Either pointer may be NULL. */
SF_API sf_status sf_sparse24_shape(const sf_sparse24* h, int64_t* rows, int64_t* cols);
/* The stored shape: rows rounded up to 16, cols rounded up to 32 (the padding is zeros). */
SF_API sf_status sf_sparse24_padded_shape(const sf_sparse24* h, int64_t* rows_padded,
                                          int64_t* cols_padded);
SF_API sf_status sf_sparse24_dtype(const sf_sparse24* h, sf_dtype* dtype);
/* Bytes a kernel reads to use the matrix once: values + metadata. */
SF_API sf_status sf_sparse24_compressed_bytes(const sf_sparse24* h, size_t* bytes);

/* The kept values, [rows_padded, cols_padded / 2] row-major of the handle's dtype. The pointer is
 * owned by the handle and valid until sf_sparse24_free. */
SF_API sf_status sf_sparse24_values(const sf_sparse24* h, const void** data, size_t* bytes);
/* The metadata words (uint32, mma.sp m16n8k32 fragment order, docs/SPARSE24.md):
 * rows_padded / 16 * cols_padded / 32 * 16 words. Owned by the handle like the values. */
SF_API sf_status sf_sparse24_meta(const sf_sparse24* h, const uint32_t** data, size_t* bytes);

/* Write the dense [rows, cols] matrix (the handle's dtype) to out; bit-exact inverse of compress.
 */
SF_API sf_status sf_sparse24_decompress(const sf_sparse24* h, void* out);

/* y[m, N] = act(x[m, K] W^T + bias) + residual on the CPU, fp32 accumulation, multithreaded.
 * x_dtype and y_dtype are F32, F16 or BF16. bias [N] and residual [m, N] are optional (NULL); their
 * dtype arguments are read only when they are given. m == 0 does nothing. y must not overlap x or
 * residual. */
SF_API sf_status sf_sparse24_gemm_cpu(const sf_sparse24* h, const void* x, sf_dtype x_dtype,
                                      int64_t m, void* y, sf_dtype y_dtype, const void* bias,
                                      sf_dtype bias_dtype, sf_activation act, const void* residual,
                                      sf_dtype residual_dtype);

/* ---- 2:4 linear layers on a CUDA GPU --------------------------------------------------------- */
/* In a build without the CUDA backend every function below links and returns SF_ERR_NO_DEVICE
 * with the reason in sf_last_error() (sf_cuda_linear_free and sf_cuda_release_workspaces do
 * nothing). Device pointers are plain CUDA device (or managed) addresses, e.g. a PyTorch
 * tensor's data_ptr(); `stream` is a cudaStream_t passed as void* (NULL: the legacy default
 * stream). Work is enqueued on that stream and not waited for, like a CUDA kernel launch. */

/* SF_OK when this library has the CUDA backend and a usable GPU with sparse tensor cores (sm_80
 * or newer); otherwise SF_ERR_NO_DEVICE, and sf_last_error() says why and what to do. */
SF_API sf_status sf_cuda_check(void);

/* A 2:4 weight W [N, K] (fp16 or bf16) resident on one GPU in the kernels' layout: the only copy
 * of W that SparseFlow keeps (values + metadata, about 0.56 of the dense bytes). Immutable; may be
 * used from several threads and streams at once, and must not be freed while in use. */
typedef struct sf_cuda_linear sf_cuda_linear;

/* Upload the compressed matrix w (F16 or BF16; F32 is SF_ERR_UNSUPPORTED_SHAPE: convert the
 * weight first) to GPU `device` (-1: the calling thread's current device), ordered on `stream`,
 * which must belong to that device. w is not kept: free it when no longer needed. On failure
 * *out is NULL. */
SF_API sf_status sf_cuda_linear_create(const sf_sparse24* w, int device, void* stream,
                                       sf_cuda_linear** out);

/* Prune the dense w [rows, cols] (F16 or BF16) to 2:4 with `method` (act_norms as in
 * sf_prune_24), compress it and upload it to GPU `device`. w_on_device = 0: w is host memory;
 * 1: w is device memory on that GPU, read on `stream` after the work already queued there. w
 * itself is never modified. The pruning runs on the host, so a device w is copied to the host
 * once, here. */
SF_API sf_status sf_cuda_linear_create_dense(const void* w, sf_dtype dtype, int64_t rows,
                                             int64_t cols, int w_on_device, sf_prune_method method,
                                             const float* act_norms, int device, void* stream,
                                             sf_cuda_linear** out);

/* Release the device memory (synchronizing with the GPU, as cudaFree does). NULL is allowed. */
SF_API void sf_cuda_linear_free(sf_cuda_linear* h);

/* The logical shape [rows, cols] = [N, K], the element type, the GPU's index and the bytes the
 * weight takes on it. Every output pointer may be NULL. */
SF_API sf_status sf_cuda_linear_info(const sf_cuda_linear* h, int64_t* rows, int64_t* cols,
                                     sf_dtype* dtype, int* device, size_t* device_bytes);

/* y[m, N] = act(x[m, K] W^T + bias) + residual on the handle's GPU, enqueued on `stream`; fp32
 * accumulation. x, y, bias [N] and residual [m, N] are device pointers, row-major and contiguous.
 * x_dtype must be the weight's dtype; y_dtype, bias_dtype and residual_dtype are F32, F16 or
 * BF16 (the last two read only when the pointer is given). y must not overlap x or residual.
 * m == 0 does nothing. The kernel is chosen by M (docs/KERNELS.md); x rows that are not 16-byte
 * aligned (K % 8 != 0) take a slower variant. One set of scratch buffers is kept per (GPU,
 * stream) and shared by all handles; sf_cuda_release_workspaces frees it. */
SF_API sf_status sf_cuda_linear_forward(const sf_cuda_linear* h, const void* x, sf_dtype x_dtype,
                                        int64_t m, void* y, sf_dtype y_dtype, const void* bias,
                                        sf_dtype bias_dtype, sf_activation act,
                                        const void* residual, sf_dtype residual_dtype,
                                        void* stream);

/* Write the dense 2:4 matrix [rows, cols] (the handle's dtype) to the device buffer out, enqueued
 * on `stream`: what the kernels multiply by, for checking results. */
SF_API sf_status sf_cuda_linear_decompress(const sf_cuda_linear* h, void* out, void* stream);

/* Free the per-(GPU, stream) scratch buffers and cuBLAS handles that sf_cuda_linear_forward keeps
 * (the dense fallback's scratch for M > 64 holds a decompressed copy of the largest weight used).
 * Waits for the work queued on those streams. The next forward allocates them again. */
SF_API void sf_cuda_release_workspaces(void);

/* ---- sessions: a model, its tokenizer and an engine ----------------------------------------- */
/* A session opens a model (a .sf file, a GGUF file, or a Hugging Face checkpoint directory of OPT,
 * Llama, Mistral, Qwen2 or GPT-2) and runs it on the CPU, on a CUDA GPU, or on a GPU under a memory
 * budget (ReLU models: the FFN offloaded neuron by neuron; gated models: whole layers streamed
 * from host memory): the object `sparseflow generate` and `sparseflow perplexity` use. A session
 * is used by one thread at a time (calls on different sessions may run in parallel). JSON strings
 * that a session returns are UTF-8, owned by the session and valid until its next call. Text
 * prompts get the model's BOS token prepended where its tokenizer adds one (as Hugging Face's
 * does); ids are used as given. */
typedef struct sf_session sf_session;

/* Option structs start with struct_size = sizeof(the struct as the caller compiled it), so that a
 * later version can add fields at the end: the library reads only the fields the caller's size
 * covers and takes defaults for the rest. Fill them with the _init function first. */
typedef struct sf_session_options {
  size_t struct_size;
  const char* device;         /* "cpu", "cuda", or "auto" (NULL): cuda when a GPU is usable */
  int threads;                /* CPU threads of this session's calls; 0: OpenMP's default */
  const char* gpu_memory;     /* NULL or "": not offloaded; "6GiB", "6000MiB", "0.5" or "50%" of
                                 the model's bytes: run offloaded under this GPU budget (needs
                                 device cuda or auto and a usable GPU) */
  double gpu_cache_ratio;     /* offloaded: fraction of the FFN's GPU budget kept as an LRU neuron
                                 cache, the rest pinning the hottest neurons; < 0: the default 0.3 */
  const char* offload_policy; /* offloaded: "fetch" (NULL), "cpu", "auto" or "stream" */
  int collect_stats;          /* offloaded: non-zero measures PCIe bytes, hit rate, recall */
  int64_t context_tokens;     /* offloaded: KV cache tokens the plan reserves; 0: the model's
                                 max_position_embeddings */
  const char* predictor;      /* offloaded: "model" (NULL): the calibrated predictors stored in
                                 the .sf file (`sparseflow calibrate`); "exact": the true active
                                 set from every fc1 row (an oracle for tests; slow) */
} sf_session_options;

/* Fill *options with the defaults: device auto, not offloaded, struct_size set. */
SF_API sf_status sf_session_options_init(sf_session_options* options);

/* Open `path` with `options` (NULL: the defaults) and start its engine: weights loaded, uploaded
 * to the GPU for cuda, placed under the budget when offloaded. SF_ERR_NO_DEVICE (with the reason)
 * when device cuda or a GPU budget was asked for and no GPU is usable; SF_ERR_IO, SF_ERR_FORMAT
 * or SF_ERR_NOT_FOUND for a model that cannot be read. On failure *out is NULL. */
SF_API sf_status sf_session_open(const char* path, const sf_session_options* options,
                                 sf_session** out);
/* Release a session. NULL is allowed and does nothing. */
SF_API void sf_session_free(sf_session* s);

/* *json: {"architecture", "layers", "hidden", "ffn", "heads", "vocab", "max_positions", "dtype",
 * "weights" ("2:4" or "dense"), "has_tokenizer", "device" ("cpu" or "cuda"), "threads",
 * "offloaded", "memory": {"weight_bytes", "gpu": {...}}, "offload": {...} when offloaded, ...}. */
SF_API sf_status sf_session_info_json(sf_session* s, const char** json);

typedef struct sf_generate_params {
  size_t struct_size;
  int64_t max_new_tokens; /* default 32; lowered to what max_position_embeddings leaves */
  int greedy;             /* non-zero (the default): argmax; the sampling fields are ignored */
  float temperature;      /* > 0; default 1 */
  int64_t top_k;          /* 0 (the default): all tokens */
  float top_p;            /* in (0, 1]; default 1 */
  uint64_t seed;          /* same seed and settings, same text (on a given device) */
} sf_generate_params;

/* Fill *params with the defaults: 32 new tokens, greedy, struct_size set. */
SF_API sf_status sf_generate_params_init(sf_generate_params* params);

/* Called with each new token as it is chosen, and the UTF-8 text this token completes: "" while a
 * character is still incomplete, and always "" for a model without a tokenizer. `text` is valid
 * during the call only. Return 0 to go on, non-zero to stop after this token: the call then
 * returns SF_OK with "stopped_by": "callback" and the session stays usable. The callback must not
 * call into the same session. */
typedef int (*sf_token_callback)(void* user, int32_t token, const char* text);

/* Generate after the UTF-8 prompt (BOS prepended), stopping at EOS, at max_new_tokens, or when cb
 * asks. params NULL: the defaults; cb may be NULL. *result_json (may be NULL when not wanted):
 * {"text", "ids" (new tokens), "prompt_ids", "prefill_ms", "decode_ms", "decode_steps",
 * "decode_tokens_per_s", "max_new_tokens" (as run), "stopped_by": "eos"|"max_tokens"|"callback"}.
 * "text" is the callback's pieces joined, plus U+FFFD for a character cut off at the end. */
SF_API sf_status sf_session_generate(sf_session* s, const char* prompt_utf8,
                                     const sf_generate_params* params, sf_token_callback cb,
                                     void* user, const char** result_json);
/* The same after n prompt token ids, used exactly as given (no BOS added). */
SF_API sf_status sf_session_generate_ids(sf_session* s, const int32_t* ids, size_t n,
                                         const sf_generate_params* params, sf_token_callback cb,
                                         void* user, const char** result_json);

/* exp(mean negative log-likelihood) of the UTF-8 text (BOS prepended) over non-overlapping windows
 * of `context` tokens (0: max_position_embeddings), each window's first token context only. */
SF_API sf_status sf_session_perplexity(sf_session* s, const char* text_utf8, int64_t context,
                                       double* perplexity);
/* The same over n token ids. */
SF_API sf_status sf_session_perplexity_ids(sf_session* s, const int32_t* ids, size_t n,
                                           int64_t context, double* perplexity);

/* The ids of the UTF-8 text (BOS first when add_bos), written to ids[0 .. capacity); *n_ids
 * receives the count. ids NULL with capacity 0 asks for the count alone (SF_OK); otherwise a count
 * larger than capacity is SF_ERR_INVALID_ARGUMENT, with nothing written (*n_ids still set).
 * SF_ERR_NOT_FOUND when the model has no tokenizer. */
SF_API sf_status sf_session_tokenize(sf_session* s, const char* text_utf8, int add_bos,
                                     int32_t* ids, size_t capacity, size_t* n_ids);
/* *text: the UTF-8 of n ids (invalid bytes become U+FFFD), owned like the JSON strings. */
SF_API sf_status sf_session_detokenize(sf_session* s, const int32_t* ids, size_t n,
                                       const char** text);

/* *json: the offloaded engine's counters for the last generation that ran to its end (a run a
 * callback stopped leaves them as they were): {"tokens", "hit_rate", "bytes_per_token", ...};
 * recall and per-step timing need collect_stats. SF_ERR_NOT_FOUND when the session is not
 * offloaded. */
SF_API sf_status sf_session_offload_stats_json(sf_session* s, const char** json);

/* Write the built-in default model, the tiny random-weight OPT of `sparseflow synth --arch tiny`
 * (2 layers, hidden 64, with a tokenizer), to out_path as a .sf file: to a temporary file, renamed
 * onto out_path when complete. An existing out_path is kept (SF_ERR_INVALID_ARGUMENT) unless
 * force is non-zero. Its weights are random: for examples and tests, not for text worth reading. */
SF_API sf_status sf_synth_builtin(const char* out_path, int force);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SPARSEFLOW_SPARSEFLOW_H */
