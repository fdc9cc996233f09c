/* A program outside the SparseFlow tree that uses the installed library through its C ABI:
 * prune a small matrix to 2:4, check it, compress and decompress it, and show an error message.
 * Built by examples/consumer/CMakeLists.txt (find_package) or Makefile (pkg-config). */
#include <sparseflow/sparseflow.h>

#include <stdio.h>
#include <string.h>

#define CHECK(call)                                                                   \
  do {                                                                                \
    sf_status st_ = (call);                                                           \
    if (st_ != SF_OK) {                                                               \
      fprintf(stderr, "%s failed: %s: %s\n", #call, sf_status_string(st_), sf_last_error()); \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

int main(void) {
  printf("sparseflow library %s (version %d; headers %d)\n", sf_version_string(), sf_version(), SF_VERSION);
  if (sf_version() / 10000 != SF_VERSION_MAJOR) {
    fprintf(stderr, "library major version %d does not match the headers' %d\n", sf_version() / 10000,
            SF_VERSION_MAJOR);
    return 1;
  }

  /* [2, 8]: each group of 4 keeps its 2 largest magnitudes. */
  float w[2 * 8] = {1.0f, -4.0f, 3.0f, 2.0f, 0.5f, 0.1f, -0.2f, 0.3f,
                    -1.0f, 0.0f, 0.0f, 7.0f, 2.0f, -3.0f, 1.0f, 0.0f};
  const float expect[2 * 8] = {0.0f, -4.0f, 3.0f, 0.0f, 0.5f, 0.0f, 0.0f, 0.3f,
                               -1.0f, 0.0f, 0.0f, 7.0f, 2.0f, -3.0f, 0.0f, 0.0f};
  CHECK(sf_prune_24(w, SF_DTYPE_F32, 2, 8, SF_PRUNE_MAGNITUDE, NULL, w));
  if (memcmp(w, expect, sizeof w) != 0) {
    fprintf(stderr, "pruned matrix differs from the hand-computed one\n");
    return 1;
  }
  int is_24 = 0;
  CHECK(sf_check_24(w, SF_DTYPE_F32, 2, 8, &is_24, NULL, NULL));
  if (!is_24) {
    fprintf(stderr, "the pruned matrix is not 2:4\n");
    return 1;
  }

  sf_sparse24* h = NULL;
  CHECK(sf_sparse24_compress(w, SF_DTYPE_F32, 2, 8, &h));
  float back[2 * 8];
  size_t bytes = 0;
  CHECK(sf_sparse24_compressed_bytes(h, &bytes));
  CHECK(sf_sparse24_decompress(h, back));
  sf_sparse24_free(h);
  if (memcmp(w, back, sizeof w) != 0) {
    fprintf(stderr, "decompress(compress(w)) != w\n");
    return 1;
  }
  printf("pruned, compressed (%zu bytes with padding) and restored a 2x8 matrix\n", bytes);

  /* Errors come back as a status and a message: 6 columns is not a multiple of 4. */
  sf_status st = sf_prune_24(w, SF_DTYPE_F32, 2, 6, SF_PRUNE_MAGNITUDE, NULL, w);
  if (st == SF_OK || sf_last_error()[0] == '\0') {
    fprintf(stderr, "expected an error for 6 columns\n");
    return 1;
  }
  printf("expected error: %s: %s\n", sf_status_string(st), sf_last_error());
  printf("consumer ok\n");
  return 0;
}
