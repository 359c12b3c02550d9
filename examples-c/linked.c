/*
 * linked: uses libblobcache through its header and the linker, as an
 * ordinary C program would (no dlopen): it links libblobcache_link.so
 * (-lblobcache_link) and calls the prefixed functions of blobcache.h.
 *
 * Reads one blob from start to end in 1 MiB chunks, checks every chunk
 * against a local copy of it, prints the library's counters as JSON, and
 * calls blobcache_shutdown() twice (it is idempotent) followed by one more
 * read (the library comes back up by itself).
 *
 * It also uses sockets of its own, as a host program does: before the
 * first read, while the library's threads and HTTP connections are up,
 * after a shutdown and at the end, it half-closes one end of a connected
 * socket pair with shutdown(fd, SHUT_WR) and checks that the peer sees
 * end-of-file and that the other direction still works. That is libc's
 * shutdown(2): the library it links exports no `shutdown` (the streamer's
 * libblobcache.so does, which is why programs must not link that one).
 *
 * usage: linked FILE ACCOUNT CONTAINER BLOB
 * FILE holds the blob's bytes; the library is configured by the
 * environment (BLOBCACHE_ORIGIN=file://... or the Azure settings).
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

/* Reads exactly `len` bytes at `off` of the local copy. */
static void file_read(int fd, unsigned char *dst, size_t off, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, dst + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("pread of the local copy at %zu: %s", off + done,
                 n < 0 ? strerror(errno) : "unexpected EOF");
        done += (size_t)n;
    }
}

/* Reads one chunk through the library and compares it with the copy. */
static void read_and_check(const char *account, const char *container,
                           const char *blob, int fd, size_t off, size_t len,
                           unsigned char *buf, unsigned char *truth)
{
    char err[512];
    memset(buf, 0, len);
    ssize_t got = blobcache_read(account, container, blob, buf, off, len, err,
                                 sizeof err);
    if (got == -1)
        fail("blobcache_read(%s, offset=%zu, length=%zu) failed: %s", blob,
             off, len, err);
    if (got < 0 || (size_t)got != len)
        fail("blobcache_read(%s, offset=%zu, length=%zu) returned %zd", blob,
             off, len, got);
    file_read(fd, truth, off, len);
    if (memcmp(buf, truth, len) != 0)
        fail("wrong bytes from blobcache_read(%s, offset=%zu, length=%zu)",
             blob, off, len);
}

/* Waits up to 5 s for `fd` to be readable (EOF counts). */
static void wait_readable(int fd, const char *what)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, 5000);
    while (r < 0 && errno == EINTR);
    if (r != 1)
        fail("%s: nothing to read after 5 s", what);
}

/*
 * shutdown(2) on a socket of the program's own: after shutdown(a, SHUT_WR)
 * the peer reads the byte sent before it and then end-of-file, and can still
 * send to `a`.
 */
static void check_own_socket_shutdown(const char *when)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        fail("socketpair: %s", strerror(errno));
    char c = 'x';
    if (write(sv[0], &c, 1) != 1)
        fail("write to the socket pair: %s", strerror(errno));
    errno = 0;
    int r = shutdown(sv[0], SHUT_WR);
    if (r != 0)
        fail("%s: shutdown(fd, SHUT_WR) returned %d (%s): not libc's "
             "shutdown(2)?",
             when, r, strerror(errno));
    char got[2];
    wait_readable(sv[1], when);
    if (read(sv[1], got, 1) != 1 || got[0] != 'x')
        fail("%s: the peer did not get the byte sent before shutdown", when);
    wait_readable(sv[1], when);
    ssize_t n = read(sv[1], got, 1);
    if (n != 0)
        fail("%s: the peer read %zd instead of end-of-file after "
             "shutdown(fd, SHUT_WR)",
             when, n);
    if (write(sv[1], &c, 1) != 1)
        fail("%s: the peer cannot send back: %s", when, strerror(errno));
    wait_readable(sv[0], when);
    if (read(sv[0], got, 1) != 1)
        fail("%s: the half-closed end cannot receive", when);
    close(sv[0]);
    close(sv[1]);
    printf("linked: own socket, %s: shutdown(fd, SHUT_WR) gave the peer "
           "end-of-file\n",
           when);
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
        fprintf(stderr, "usage: linked FILE ACCOUNT CONTAINER BLOB\n");
        return 2;
    }
    const char *path = argv[1], *account = argv[2], *container = argv[3],
               *blob = argv[4];

    if (blobcache_abi_version() != 1)
        fail("blobcache_abi_version() is %" PRIu32 ", expected 1",
             blobcache_abi_version());

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        fail("cannot open the local copy %s: %s", path, strerror(errno));
    size_t size = (size_t)st.st_size;

    unsigned char *buf = malloc(CHUNK), *truth = malloc(CHUNK);
    if (buf == NULL || truth == NULL)
        fail("out of memory");

    check_own_socket_shutdown("before the first read");
    print_stats("before the first read");
    size_t chunks = 0;
    for (size_t off = 0; off < size; off += CHUNK, chunks++) {
        size_t len = size - off < CHUNK ? size - off : CHUNK;
        read_and_check(account, container, blob, fd, off, len, buf, truth);
    }
    printf("linked: read %s (%zu bytes) in %zu chunks of up to 1 MiB: all "
           "bytes match the local copy\n",
           blob, size, chunks);
    print_stats("after reading");
    check_own_socket_shutdown("with the library running");

    /* Idempotent; the next read starts the library again. */
    blobcache_shutdown();
    blobcache_shutdown();
    print_stats("after blobcache_shutdown twice");
    check_own_socket_shutdown("after blobcache_shutdown");
    if (size > 0) {
        size_t len = size < CHUNK ? size : CHUNK;
        read_and_check(account, container, blob, fd, size - len, len, buf,
                       truth);
        printf("linked: a read after blobcache_shutdown works\n");
    }
    blobcache_shutdown();
    check_own_socket_shutdown("at the end");

    free(buf);
    free(truth);
    close(fd);
    printf("linked: PASS\n");
    return 0;
}
