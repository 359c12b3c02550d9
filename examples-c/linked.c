/*
 * linked: uses libblobcache through its header and the linker, as an
 * ordinary C program would (no dlopen).
 *
 * Reads one blob from start to end in 1 MiB chunks, checks every chunk
 * against the origin file, prints the library's counters as JSON, and calls
 * shutdown() twice (it is idempotent) followed by one more read (the library
 * comes back up by itself).
 *
 * usage: linked ORIGIN_ROOT ACCOUNT CONTAINER BLOB
 * with the library configured by BLOBCACHE_ORIGIN=file://ORIGIN_ROOT.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobcache.h"

#define CHUNK ((size_t)1 << 20)
#define CANARY 0xA5
#define CANARY_LEN 16

__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("linked: FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Reads exactly `len` bytes at `off` of the origin file. */
static void origin_read(int fd, unsigned char *dst, size_t off, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, dst + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("pread of the origin file at %zu: %s", off + done,
                 n < 0 ? strerror(errno) : "unexpected EOF");
        done += (size_t)n;
    }
}

/* Reads one chunk through the library and compares it with the origin. */
static void read_and_check(const char *account, const char *container,
                           const char *blob, int fd, size_t off, size_t len,
                           unsigned char *buf, unsigned char *truth)
{
    char err[512];
    memset(buf, 0, len);
    ssize_t got = blob_read(account, container, blob, buf, off, len, err,
                            sizeof err);
    if (got == -1)
        fail("blob_read(%s, offset=%zu, length=%zu) failed: %s", blob, off,
             len, err);
    if (got < 0 || (size_t)got != len)
        fail("blob_read(%s, offset=%zu, length=%zu) returned %zd", blob, off,
             len, got);
    origin_read(fd, truth, off, len);
    if (memcmp(buf, truth, len) != 0)
        fail("wrong bytes from blob_read(%s, offset=%zu, length=%zu)", blob,
             off, len);
}

/*
 * Prints the counters. Also checks the size contract: NULL or a buffer too
 * small gives -1 and leaves the buffer untouched.
 */
static void print_stats(const char *when)
{
    if (blobcache_stats_json(NULL, 0) != -1)
        fail("blobcache_stats_json(NULL, 0) did not return -1");
    unsigned char tiny[2 + CANARY_LEN];
    memset(tiny, CANARY, sizeof tiny);
    if (blobcache_stats_json((char *)tiny, 2) != -1)
        fail("blobcache_stats_json with a 2-byte buffer did not return -1");
    for (size_t i = 0; i < sizeof tiny; i++)
        if (tiny[i] != CANARY)
            fail("blobcache_stats_json wrote into a buffer too small for it");

    /* Grow the buffer until the JSON fits. */
    for (size_t cap = 64; cap <= (1u << 20); cap *= 2) {
        char *json = malloc(cap);
        if (json == NULL)
            fail("out of memory");
        ssize_t n = blobcache_stats_json(json, cap);
        if (n >= 0) {
            if ((size_t)n >= cap || strlen(json) != (size_t)n ||
                json[0] != '{' || json[n - 1] != '}')
                fail("blobcache_stats_json returned %zd for \"%s\"", n, json);
            printf("linked: stats %s: %s\n", when, json);
            free(json);
            return;
        }
        free(json);
    }
    fail("blobcache_stats_json did not fit in 1 MiB");
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: linked ORIGIN_ROOT ACCOUNT CONTAINER BLOB\n");
        return 2;
    }
    const char *root = argv[1], *account = argv[2], *container = argv[3],
               *blob = argv[4];

    if (cache_abi_version() != 1 || runai_cache_abi_version() != 1)
        fail("ABI versions are %" PRIu32 " and %" PRIu32 ", expected 1",
             cache_abi_version(), runai_cache_abi_version());

    char path[PATH_MAX];
    int plen = snprintf(path, sizeof path, "%s/%s/%s/%s", root, account,
                        container, blob);
    if (plen < 0 || (size_t)plen >= sizeof path)
        fail("origin path too long");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        fail("cannot open the origin file %s: %s", path, strerror(errno));
    size_t size = (size_t)st.st_size;

    unsigned char *buf = malloc(CHUNK), *truth = malloc(CHUNK);
    if (buf == NULL || truth == NULL)
        fail("out of memory");

    print_stats("before the first read");
    size_t chunks = 0;
    for (size_t off = 0; off < size; off += CHUNK, chunks++) {
        size_t len = size - off < CHUNK ? size - off : CHUNK;
        read_and_check(account, container, blob, fd, off, len, buf, truth);
    }
    printf("linked: read %s (%zu bytes) in %zu chunks of up to 1 MiB: all "
           "bytes match the origin\n",
           blob, size, chunks);
    print_stats("after reading");

    /* shutdown is idempotent; the next read starts the library again. */
    shutdown();
    shutdown();
    print_stats("after shutdown twice");
    if (size > 0) {
        size_t len = size < CHUNK ? size : CHUNK;
        read_and_check(account, container, blob, fd, size - len, len, buf,
                       truth);
        printf("linked: a read after shutdown works\n");
    }
    shutdown();

    free(buf);
    free(truth);
    close(fd);
    printf("linked: PASS\n");
    return 0;
}
