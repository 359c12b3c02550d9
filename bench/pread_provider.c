/*
 * The baseline of benchmark item 2: a minimal cache provider with the Run:ai
 * streamer's interface (STREAMER_CONTRACT.md) that serves blobcache's cache
 * files with one pread per block touched (one per call for reads inside a
 * block), and nothing else: no fills, no checks, no counters.
 *
 * It is handed the blobs it serves by the file named in BENCH_PREAD_MAP, one
 * line per blob, tab-separated:
 *
 *     account  container  blob  size  block_size  version_directory
 *
 * where version_directory holds blobcache's published blocks b.<i> (each the
 * block's bytes followed by a 64-byte trailer, which is never read here).
 * Every block file is opened once, at the first call.
 *
 *     cc -O2 -shared -fPIC -o libpreadprovider.so bench/pread_provider.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

struct blob {
    char *account, *container, *name;
    uint64_t size, block_size;
    size_t nblocks;
    int *fds;
};

static struct blob *blobs;
static size_t nblobs;
static char init_error[8448];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void fail_init(const char *what, const char *detail)
{
    snprintf(init_error, sizeof init_error, "pread provider: %s %s", what, detail);
}

static void init(void)
{
    const char *map = getenv("BENCH_PREAD_MAP");
    if (!map) {
        fail_init("BENCH_PREAD_MAP", "is not set");
        return;
    }
    FILE *f = fopen(map, "r");
    if (!f) {
        fail_init("cannot open", map);
        return;
    }
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *fields[6];
        char *save = NULL, *p = line;
        int n = 0;
        while (n < 6 && (fields[n] = strtok_r(p, "\t", &save)))
            p = NULL, n++;
        if (n != 6) {
            fail_init("malformed line in", map);
            break;
        }
        struct blob *grown = realloc(blobs, (nblobs + 1) * sizeof *blobs);
        if (!grown) {
            fail_init("out of memory reading", map);
            break;
        }
        blobs = grown;
        struct blob *b = &blobs[nblobs];
        b->account = strdup(fields[0]);
        b->container = strdup(fields[1]);
        b->name = strdup(fields[2]);
        b->size = strtoull(fields[3], NULL, 10);
        b->block_size = strtoull(fields[4], NULL, 10);
        b->nblocks = b->block_size ? (b->size + b->block_size - 1) / b->block_size : 0;
        b->fds = calloc(b->nblocks ? b->nblocks : 1, sizeof(int));
        if (!b->account || !b->container || !b->name || !b->fds || !b->block_size) {
            fail_init("bad entry in", map);
            break;
        }
        for (size_t i = 0; i < b->nblocks; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/b.%zu", fields[5], i);
            b->fds[i] = open(path, O_RDONLY | O_CLOEXEC);
            if (b->fds[i] < 0) {
                fail_init("cannot open block", path);
                break;
            }
        }
        nblobs++;
        if (init_error[0])
            break;
    }
    fclose(f);
}

static ssize_t fail(char *error_buf, size_t error_buf_size, const char *msg)
{
    if (error_buf && error_buf_size)
        snprintf(error_buf, error_buf_size, "%s", msg);
    return -1;
}

uint32_t cache_abi_version(void) { return 1; }
uint32_t runai_cache_abi_version(void) { return 1; }
void shutdown(void) {}

ssize_t blob_read(const char *account, const char *container, const char *blob, void *buf,
                  size_t offset, size_t length, char *error_buf, size_t error_buf_size)
{
    pthread_once(&once, init);
    if (init_error[0])
        return fail(error_buf, error_buf_size, init_error);
    if (length == 0)
        return 0;
    const struct blob *b = NULL;
    for (size_t i = 0; i < nblobs && !b; i++)
        if (!strcmp(blobs[i].name, blob) && !strcmp(blobs[i].container, container) &&
            !strcmp(blobs[i].account, account))
            b = &blobs[i];
    if (!b)
        return fail(error_buf, error_buf_size, "pread provider: blob not in the map");
    if (offset > b->size || length > b->size - offset)
        return fail(error_buf, error_buf_size, "pread provider: range past the end of the blob");
    char *out = buf;
    size_t done = 0;
    while (done < length) {
        uint64_t pos = offset + done;
        size_t block = pos / b->block_size;
        uint64_t in_block = pos % b->block_size;
        size_t n = b->block_size - in_block;
        if (n > length - done)
            n = length - done;
        ssize_t got = pread(b->fds[block], out + done, n, (off_t)in_block);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            return fail(error_buf, error_buf_size, "pread provider: short or failed pread");
        }
        done += (size_t)got;
    }
    return (ssize_t)length;
}
