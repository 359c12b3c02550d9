/*
 * streamer_like: drives libblobcache.so the way the Run:ai model streamer
 * does, and checks every byte it gets back.
 *
 * The library is loaded exactly as the streamer loads a cache provider:
 * dlopen(path, RTLD_NOW | RTLD_LOCAL), dlsym of cache_abi_version,
 * runai_cache_abi_version, blob_read and shutdown, both versions must be 1,
 * and the handle is never closed. The truth is read straight from the origin
 * files (<origin root>/<account>/<container>/<blob>) with pread, so the
 * library must be configured with BLOBCACHE_ORIGIN=file://<origin root>.
 *
 * Phases (each prints one summary line; any mismatch ends the process with
 * exit status 1 and a message starting "streamer_like: FAIL"):
 *   a. error handling: error buffers of every size, bad names, bad ranges
 *   b. many threads reading random ranges, every byte verified
 *   c. reads racing shutdown(), cycle after cycle
 *   d. fork() while reader threads are busy; the child reads at once
 *
 * usage: streamer_like [options] LIBRARY ORIGIN_ROOT ACCOUNT CONTAINER BLOB...
 * Run with -h for the options. A phase (each cycle of c, each fork of d)
 * that takes longer than -T seconds is reported as a hang (exit status 3).
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The provider interface, as the streamer declares it. */
typedef uint32_t (*abi_version_fn)(void);
typedef ssize_t (*blob_read_fn)(const char *account, const char *container,
                                const char *blob, void *buf, size_t offset,
                                size_t length, char *error_buf,
                                size_t error_buf_size);
typedef void (*shutdown_fn)(void);

static struct {
    abi_version_fn cache_abi_version;
    abi_version_fn runai_cache_abi_version;
    blob_read_fn blob_read;
    shutdown_fn shutdown;
} lib;

/* The size of the error buffer the streamer passes. */
#define STREAMER_ERRBUF 512
/* Guard bytes after every buffer handed to the library. */
#define CANARY_LEN 64
#define CANARY 0xA5
/* Fill for destination buffers, so a "successful" read that wrote nothing
 * cannot pass by finding the bytes of an earlier read. */
#define POISON 0x5A
#define MIB (1024.0 * 1024.0)

/*
 * Phase d is off by default in AddressSanitizer builds: GCC 12's ASan
 * runtime does not hold its allocator's locks across fork(), so a child
 * forked while any other thread is inside malloc deadlocks in its own first
 * malloc (seen here in the child's first blob_read). That is the
 * sanitizer's limitation, not the library's; plain and valgrind runs cover
 * fork. Pass -f N to try anyway.
 */
#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_FORKS 0
#else
#define DEFAULT_FORKS 8
#endif

/* One blob of the origin, opened for reading the truth. */
struct blob {
    const char *name;
    int fd;
    size_t size;
};

static struct {
    const char *account;
    const char *container;
    struct blob *blobs;
    size_t nblobs;
    size_t *readable;         /* indexes of blobs with size > 0 */
    size_t nreadable;
    size_t block_size;        /* the library's block size, for boundary picks */
    size_t max_len;           /* longest read (the streamer's chunk size) */
    unsigned threads;         /* phase b */
    unsigned long reads;      /* phase b, per thread */
    unsigned cycles;          /* phase c */
    unsigned forks;           /* phase d */
    uint64_t seed;
    unsigned timeout;         /* seconds a phase may take before a hang */
    const char *scratch;      /* directory for extra cache directories */
    bool verbose;
} opt;

/* ------------------------------------------------------------------------
 * Failing, timing, randomness
 * ------------------------------------------------------------------------ */

/* Reports a failure and ends the process (or the forked child) at once. */
__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "streamer_like: FAIL: %s (seed %" PRIu64 ")\n", msg,
            opt.seed);
    fflush(NULL);
    _exit(1);
}

/* The phase the watchdog names if it fires. */
static const char *volatile current_phase = "startup";

static void on_alarm(int sig)
{
    (void)sig;
    static const char a[] = "streamer_like: FAIL: hang: ";
    static const char b[] = " did not finish within the -T limit "
                            "(deadlock or stuck read?)\n";
    const char *p = current_phase;
    /* Only async-signal-safe calls here. */
    if (write(STDERR_FILENO, a, sizeof a - 1) < 0 ||
        write(STDERR_FILENO, p, strlen(p)) < 0 ||
        write(STDERR_FILENO, b, sizeof b - 1) < 0) {
        /* Nothing more we can do. */
    }
    _exit(3);
}

/* Arms (or re-arms) the hang watchdog for `phase`. */
static void watchdog(const char *phase)
{
    current_phase = phase;
    alarm(opt.timeout);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_us(uint64_t us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000),
                          .tv_nsec = (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* splitmix64: small, fast, and good enough to pick ranges. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A number in [0, n); 0 when n is 0. */
static uint64_t rng_below(uint64_t *state, uint64_t n)
{
    return n == 0 ? 0 : rng_next(state) % n;
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        fail("out of memory allocating %zu bytes", n);
    return p;
}

/* ------------------------------------------------------------------------
 * Loading the library as the streamer does
 * ------------------------------------------------------------------------ */

static void *must_dlsym(void *handle, const char *name)
{
    dlerror();
    void *sym = dlsym(handle, name);
    const char *err = dlerror();
    if (sym == NULL || err != NULL)
        fail("dlsym(%s): %s", name, err ? err : "symbol is NULL");
    return sym;
}

/* The file a symbol was found in, so we can tell ours from libc's. */
static const char *symbol_file(void *sym, const char *name)
{
    Dl_info info;
    if (dladdr(sym, &info) == 0 || info.dli_fname == NULL)
        fail("dladdr(%s) found no object for the symbol", name);
    return info.dli_fname;
}

static void load_library(const char *path)
{
    /* The streamer's flags. It never calls dlclose, and neither do we. */
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL)
        fail("dlopen(%s): %s", path, dlerror());

    /* Function pointers travel through void * as POSIX dlsym requires. */
    void *v1 = must_dlsym(handle, "cache_abi_version");
    void *v0 = must_dlsym(handle, "runai_cache_abi_version");
    void *rd = must_dlsym(handle, "blob_read");
    void *sd = must_dlsym(handle, "shutdown");
    memcpy(&lib.cache_abi_version, &v1, sizeof v1);
    memcpy(&lib.runai_cache_abi_version, &v0, sizeof v0);
    memcpy(&lib.blob_read, &rd, sizeof rd);
    memcpy(&lib.shutdown, &sd, sizeof sd);

    /* A library without its own `shutdown` would hand us libc's socket
     * shutdown(int, int) here, found through its dependencies. */
    const char *home = symbol_file(rd, "blob_read");
    const char *names[] = {"cache_abi_version", "runai_cache_abi_version",
                           "shutdown"};
    void *syms[] = {v1, v0, sd};
    for (size_t i = 0; i < 3; i++) {
        const char *f = symbol_file(syms[i], names[i]);
        if (strcmp(f, home) != 0)
            fail("dlsym(%s) resolved into %s, not into the library (%s)",
                 names[i], f, home);
    }

    uint32_t a = lib.cache_abi_version();
    uint32_t b = lib.runai_cache_abi_version();
    if (a != 1 || b != 1)
        fail("ABI versions: cache_abi_version()=%" PRIu32
             " runai_cache_abi_version()=%" PRIu32 ", want 1 and 1",
             a, b);
    printf("load: dlopen(RTLD_NOW|RTLD_LOCAL) %s: 4 symbols, ABI version 1\n",
           path);
}

/* ------------------------------------------------------------------------
 * The truth, from the origin files
 * ------------------------------------------------------------------------ */

static void open_blobs(const char *root, char **names, size_t n)
{
    opt.blobs = xmalloc(n * sizeof *opt.blobs);
    opt.readable = xmalloc(n * sizeof *opt.readable);
    opt.nblobs = n;
    opt.nreadable = 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        int len = snprintf(path, sizeof path, "%s/%s/%s/%s", root,
                           opt.account, opt.container, names[i]);
        if (len < 0 || (size_t)len >= sizeof path)
            fail("origin path for %s is too long", names[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0)
            fail("cannot open origin file %s: %s", path, strerror(errno));
        opt.blobs[i] = (struct blob){.name = names[i], .fd = fd,
                                     .size = (size_t)st.st_size};
        if (st.st_size > 0)
            opt.readable[opt.nreadable++] = i;
    }
    if (opt.nreadable == 0)
        fail("no blob has any bytes; give at least one non-empty blob");
}

/* Reads bytes [offset, offset+length) of the origin file. */
static void origin_read(const struct blob *b, unsigned char *dst,
                        size_t offset, size_t length)
{
    size_t done = 0;
    while (done < length) {
        ssize_t n = pread(b->fd, dst + done, length - done,
                          (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("pread of origin file for %s at %zu: %s", b->name,
                 offset + done, n < 0 ? strerror(errno) : "unexpected EOF");
        done += (size_t)n;
    }
}

/* ------------------------------------------------------------------------
 * One verified read
 * ------------------------------------------------------------------------ */

/*
 * Reads [offset, offset+length) of `b` through the library into `buf`
 * (length + CANARY_LEN bytes) and compares it with the origin, read into
 * `truth`. Returns true on a correct read. A failed read (-1 with a
 * NUL-terminated, non-empty message) returns false when `may_fail`, with
 * the message in `failure` (STREAMER_ERRBUF bytes) unless that is NULL, and
 * fails the process otherwise. Anything else fails the process.
 */
static bool verified_read(const char *who, const struct blob *b,
                          size_t offset, size_t length, unsigned char *buf,
                          unsigned char *truth, bool may_fail, char *failure)
{
    char err[STREAMER_ERRBUF];
    memset(buf, POISON, length);
    memset(buf + length, CANARY, CANARY_LEN);
    memset(err, 'Z', sizeof err);

    ssize_t got = lib.blob_read(opt.account, opt.container, b->name, buf,
                                offset, length, err, sizeof err);

    for (size_t i = 0; i < CANARY_LEN; i++)
        if (buf[length + i] != CANARY)
            fail("%s: blob_read(%s, offset=%zu, length=%zu) wrote past the "
                 "end of the buffer (byte %zu after it)",
                 who, b->name, offset, length, i);
    if (got == -1) {
        if (memchr(err, 0, sizeof err) == NULL)
            fail("%s: blob_read(%s, offset=%zu, length=%zu) returned -1 "
                 "without a NUL-terminated message",
                 who, b->name, offset, length);
        if (err[0] == '\0')
            fail("%s: blob_read(%s, offset=%zu, length=%zu) returned -1 "
                 "with an empty message",
                 who, b->name, offset, length);
        if (!may_fail)
            fail("%s: blob_read(%s, offset=%zu, length=%zu) failed: %s", who,
                 b->name, offset, length, err);
        if (failure != NULL)
            memcpy(failure, err, sizeof err);
        return false;
    }
    if (got < 0 || (size_t)got != length)
        fail("%s: blob_read(%s, offset=%zu, length=%zu) returned %zd, "
             "expected %zu",
             who, b->name, offset, length, got, length);

    origin_read(b, truth, offset, length);
    if (memcmp(buf, truth, length) != 0) {
        size_t i = 0;
        while (buf[i] == truth[i])
            i++;
        size_t wrong = 0;
        for (size_t k = i; k < length; k++)
            wrong += buf[k] != truth[k];
        fail("%s: WRONG BYTES from blob_read(%s, offset=%zu, length=%zu): "
             "first difference at blob offset %zu (got 0x%02x, origin has "
             "0x%02x), %zu bytes differ",
             who, b->name, offset, length, offset + i, buf[i], truth[i],
             wrong);
    }
    return true;
}

/*
 * Picks a range the way the streamer's reads look, with extra weight on the
 * cases a block cache can get wrong: tiny reads, reads crossing a block
 * boundary, reads ending exactly at the end of the blob, whole blocks.
 */
static void pick_range(uint64_t *rng, size_t max_len, const struct blob **bp,
                       size_t *offp, size_t *lenp)
{
    const struct blob *b =
        &opt.blobs[opt.readable[rng_below(rng, opt.nreadable)]];
    size_t size = b->size, bs = opt.block_size;
    size_t cap = min_size(max_len, size);
    size_t off, len;
    uint64_t kind = rng_below(rng, 100);

    if (kind < 10) {
        /* The safetensors header-size read. */
        off = 0;
        len = min_size(8, size);
    } else if (kind < 35) {
        /* Small reads anywhere. */
        len = 1 + rng_below(rng, min_size(4096, cap));
        off = rng_below(rng, size - len + 1);
    } else if (kind < 60 && size > bs) {
        /* Straddle a block boundary, by a few bytes or by a lot. */
        size_t nbound = (size - 1) / bs; /* boundaries inside the blob */
        size_t at = (1 + rng_below(rng, nbound)) * bs;
        size_t span = rng_below(rng, 2) ? 64 : max_len / 2;
        size_t before = 1 + rng_below(rng, min_size(span, at));
        size_t after = 1 + rng_below(rng, min_size(span, size - at));
        off = at - before;
        len = min_size(before + after, max_len);
    } else if (kind < 70) {
        /* End exactly at the end of the blob. */
        len = 1 + rng_below(rng, cap);
        off = size - len;
    } else if (kind < 75) {
        /* One whole, aligned block (or what is left of it). */
        off = rng_below(rng, (size + bs - 1) / bs) * bs;
        len = min_size(min_size(bs, size - off), max_len);
    } else {
        /* Anything, up to the chunk size. */
        len = 1 + rng_below(rng, cap);
        off = rng_below(rng, size - len + 1);
    }
    *bp = b;
    *offp = off;
    *lenp = len;
}

/* ------------------------------------------------------------------------
 * Reader threads (phases b, c and d)
 * ------------------------------------------------------------------------ */

struct reader {
    pthread_t thread;
    char name[48];
    uint64_t rng;
    size_t max_len;
    unsigned long target;   /* reads to do; 0 = until `stop_readers` */
    bool may_fail;          /* -1 with a message is acceptable */
    unsigned char *buf;     /* max_len + CANARY_LEN */
    unsigned char *truth;   /* max_len */
    unsigned long ok;
    unsigned long failed;
    uint64_t bytes;
    char first_failure[STREAMER_ERRBUF];
    /* The range being read right now (cur_len 0: none), for a forked
     * child to repeat, and how many reads this thread has begun. */
    _Atomic size_t cur_blob, cur_off, cur_len;
    atomic_ulong begun;
};

static atomic_bool stop_readers;

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    for (unsigned long i = 0; r->target == 0 || i < r->target; i++) {
        if (r->target == 0 &&
            atomic_load_explicit(&stop_readers, memory_order_relaxed))
            break;
        const struct blob *b;
        size_t off, len;
        pick_range(&r->rng, r->max_len, &b, &off, &len);
        atomic_store_explicit(&r->cur_blob, (size_t)(b - opt.blobs),
                              memory_order_relaxed);
        atomic_store_explicit(&r->cur_off, off, memory_order_relaxed);
        atomic_store_explicit(&r->cur_len, len, memory_order_relaxed);
        atomic_fetch_add(&r->begun, 1);
        bool ok = verified_read(r->name, b, off, len, r->buf, r->truth,
                                r->may_fail,
                                r->failed == 0 ? r->first_failure : NULL);
        atomic_store_explicit(&r->cur_len, 0, memory_order_relaxed);
        if (ok) {
            r->ok++;
            r->bytes += len;
        } else {
            r->failed++;
        }
    }
    return NULL;
}

static void reader_init(struct reader *r, const char *phase, unsigned id,
                        size_t max_len, unsigned long target, bool may_fail)
{
    memset(r, 0, sizeof *r);
    atomic_init(&r->cur_blob, 0);
    atomic_init(&r->cur_off, 0);
    atomic_init(&r->cur_len, 0);
    atomic_init(&r->begun, 0);
    snprintf(r->name, sizeof r->name, "%s thread %u", phase, id);
    /* Distinct, reproducible streams per phase and thread. */
    uint64_t salt = 0;
    for (const char *p = phase; *p; p++)
        salt = salt * 31 + (unsigned char)*p;
    r->rng = opt.seed ^ (salt << 32) ^ ((uint64_t)id * 0x100000001B3ull);
    r->max_len = max_len;
    r->target = target;
    r->may_fail = may_fail;
    r->buf = xmalloc(max_len + CANARY_LEN);
    r->truth = xmalloc(max_len);
}

static void reader_free(struct reader *r)
{
    free(r->buf);
    free(r->truth);
}

static void readers_start(struct reader *rs, unsigned n)
{
    atomic_store(&stop_readers, false);
    for (unsigned i = 0; i < n; i++) {
        int e = pthread_create(&rs[i].thread, NULL, reader_main, &rs[i]);
        if (e != 0)
            fail("pthread_create: %s", strerror(e));
    }
}

static void readers_join(struct reader *rs, unsigned n)
{
    atomic_store(&stop_readers, true);
    for (unsigned i = 0; i < n; i++) {
        int e = pthread_join(rs[i].thread, NULL);
        if (e != 0)
            fail("pthread_join: %s", strerror(e));
    }
}

/* ------------------------------------------------------------------------
 * Phase a: error handling
 * ------------------------------------------------------------------------ */

/* A request that must fail. */
struct bad_request {
    const char *what;
    const char *account;
    const char *container;
    const char *blob;
    size_t offset;
    size_t length; /* at most 64: the destination is a small local buffer */
};

static unsigned long checks_done;

/* Structural UTF-8 check: no stray or cut-off multi-byte sequence. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t extra;
        if (*p < 0x80)
            extra = 0;
        else if (*p >= 0xC2 && *p <= 0xDF)
            extra = 1;
        else if (*p >= 0xE0 && *p <= 0xEF)
            extra = 2;
        else if (*p >= 0xF0 && *p <= 0xF4)
            extra = 3;
        else
            return false;
        for (size_t k = 1; k <= extra; k++)
            if ((p[k] & 0xC0) != 0x80) /* also stops at the NUL */
                return false;
        p += extra + 1;
    }
    return true;
}

/*
 * Calls blob_read for `q` with an error buffer of `size` bytes (NULL when
 * `null_buf`) and checks the contract: -1, the message NUL-terminated inside
 * the buffer, not one byte written past it (nothing at all for size 0), and
 * nothing written past the destination. Copies the message to `out` (at
 * least `size` bytes) when size > 0.
 */
static void call_failing(const struct bad_request *q, size_t size,
                         bool null_buf, char *out)
{
    unsigned char dst[64 + CANARY_LEN];
    unsigned char eb[STREAMER_ERRBUF + CANARY_LEN];
    if (q->length > 64)
        fail("phase a: bad test: length %zu > 64", q->length);
    memset(dst, CANARY, sizeof dst);
    memset(eb, CANARY, sizeof eb);

    ssize_t r = lib.blob_read(q->account, q->container, q->blob, dst,
                              q->offset, q->length,
                              null_buf ? NULL : (char *)eb, size);
    checks_done++;
    if (r != -1)
        fail("phase a: %s: blob_read returned %zd, expected -1", q->what, r);
    for (size_t i = size; i < size + CANARY_LEN; i++)
        if (eb[i] != CANARY)
            fail("phase a: %s: error_buf_size=%zu%s but byte %zu of the "
                 "buffer was written",
                 q->what, size, null_buf ? " (NULL)" : "", i);
    for (size_t i = q->length; i < sizeof dst; i++)
        if (dst[i] != CANARY)
            fail("phase a: %s: wrote past the destination buffer", q->what);
    if (size > 0) {
        if (memchr(eb, 0, size) == NULL)
            fail("phase a: %s: error_buf_size=%zu: message not "
                 "NUL-terminated within the buffer",
                 q->what, size);
        memcpy(out, eb, strlen((char *)eb) + 1);
    }
}

/*
 * The full error-buffer contract for one failing request: every buffer size
 * the brief names, truncation that keeps a prefix of the full message and
 * never cuts a UTF-8 character. Returns the full message in `full`.
 */
static void check_error_buffers(const struct bad_request *q,
                                const char *must_mention,
                                char full[STREAMER_ERRBUF])
{
    call_failing(q, STREAMER_ERRBUF, false, full);
    if (full[0] == '\0')
        fail("phase a: %s: empty error message", q->what);
    if (must_mention && strstr(full, must_mention) == NULL)
        fail("phase a: %s: the message does not mention \"%s\": %s", q->what,
             must_mention, full);
    if (!utf8_valid(full))
        fail("phase a: %s: the message is not valid UTF-8", q->what);

    call_failing(q, 0, true, NULL);
    call_failing(q, 0, false, NULL);
    const size_t sizes[] = {1, 2, 7};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char part[STREAMER_ERRBUF];
        call_failing(q, sizes[i], false, part);
        size_t n = strlen(part);
        if (n >= sizes[i] || strncmp(part, full, n) != 0 || !utf8_valid(part))
            fail("phase a: %s: error_buf_size=%zu gave \"%s\", not a "
                 "prefix of \"%s\" that fits",
                 q->what, sizes[i], part, full);
    }
}

/* A request that must fail, checked with the streamer's buffer only. */
static void expect_failure(const struct bad_request *q)
{
    char msg[STREAMER_ERRBUF];
    call_failing(q, STREAMER_ERRBUF, false, msg);
    if (msg[0] == '\0')
        fail("phase a: %s: empty error message", q->what);
    if (opt.verbose)
        printf("  %s: %s\n", q->what, msg);
}

static void expect_zero_length_ok(const char *what, const struct blob *b,
                                  size_t offset, bool null_dst)
{
    unsigned char dst[1] = {CANARY};
    char err[STREAMER_ERRBUF] = "";
    ssize_t r = lib.blob_read(opt.account, opt.container, b->name,
                              null_dst ? NULL : dst, offset, 0, err,
                              sizeof err);
    checks_done++;
    if (r != 0)
        fail("phase a: %s: blob_read(length=0) returned %zd, expected 0 (%s)",
             what, r, r == -1 ? err : "");
    if (dst[0] != CANARY)
        fail("phase a: %s: blob_read(length=0) wrote to the buffer", what);
}

static void phase_a(void)
{
    watchdog("phase a (error handling)");
    double t0 = now_seconds();
    const char *A = opt.account, *C = opt.container;

    /* The largest blob is the subject of the range checks. */
    const struct blob *big = &opt.blobs[opt.readable[0]];
    for (size_t i = 0; i < opt.nreadable; i++)
        if (opt.blobs[opt.readable[i]].size > big->size)
            big = &opt.blobs[opt.readable[i]];
    size_t sz = big->size;

    /* A good read first, so the library is up before the bad ones. */
    unsigned char buf[8 + CANARY_LEN], truth[8];
    verified_read("phase a", big, 0, min_size(8, sz), buf, truth, false,
                  NULL);
    checks_done++;

    char full[STREAMER_ERRBUF];
    struct bad_request past_end = {"range past the end", A, C, big->name,
                                   sz - 1, 16};
    check_error_buffers(&past_end, big->name, full);
    char example[STREAMER_ERRBUF];
    memcpy(example, full, sizeof full);

    struct bad_request null_blob = {"NULL blob name", A, C, NULL, 0, 8};
    check_error_buffers(&null_blob, NULL, full);

    /* A missing blob with a non-ASCII name: the message names it, and every
     * truncation point keeps the message valid UTF-8. */
    const char *missing = "missing-\xc3\xbc\xe2\x82\xac\xe5\x90\x8d.bin";
    struct bad_request absent = {"missing blob", A, C, missing, 0, 8};
    check_error_buffers(&absent, missing, full);
    size_t full_len = strlen(full);
    for (size_t size = 1; size <= full_len + 1; size++) {
        char part[STREAMER_ERRBUF];
        call_failing(&absent, size, false, part);
        if (strncmp(part, full, strlen(part)) != 0 || !utf8_valid(part) ||
            strlen(part) + 4 < min_size(size - 1, full_len))
            fail("phase a: error_buf_size=%zu cut the message badly: \"%s\"",
                 size, part);
    }

    /* Ranges. */
    char traversal[PATH_MAX];
    snprintf(traversal, sizeof traversal, "../%s/%s", C, big->name);
    const struct bad_request bad[] = {
        {"range starting at the end", A, C, big->name, sz, 1},
        {"range far past the end", A, C, big->name, sz + (1u << 20), 16},
        {"offset+length overflows", A, C, big->name, SIZE_MAX - 1, 16},
        {"offset SIZE_MAX", A, C, big->name, SIZE_MAX, 1},
        /* Names that must be refused before any path is built. */
        {"NULL account", NULL, C, big->name, 0, 8},
        {"NULL container", A, NULL, big->name, 0, 8},
        {"invalid UTF-8 blob name", A, C, "bad-\xff\xfe-utf8.bin", 0, 8},
        {"truncated UTF-8 blob name", A, C, "cut-\xc3", 0, 8},
        {"invalid UTF-8 account", "acc\xff", C, big->name, 0, 8},
        {"invalid UTF-8 container", A, "con\xc0\xaf", big->name, 0, 8},
        {"blob ..", A, C, "..", 0, 8},
        {"blob ../x", A, C, "../x", 0, 8},
        {"blob x/../../y", A, C, "x/../../y", 0, 8},
        {"blob path traversal to a real file", A, C, traversal, 0, 8},
        {"absolute blob path", A, C, "/etc/passwd", 0, 8},
        {"blob with backslashes", A, C, "..\\..\\x", 0, 8},
        {"blob with a backslash", A, C, "dir\\file.bin", 0, 8},
        {"empty blob name", A, C, "", 0, 8},
        {"account ..", "..", C, big->name, 0, 8},
        {"container ..", A, "..", big->name, 0, 8},
        {"account with /", "a/b", C, big->name, 0, 8},
        {"container with a backslash", A, "c\\d", big->name, 0, 8},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_failure(&bad[i]);

    /* Empty blobs: any byte is past the end; length 0 is fine. */
    unsigned zero_blobs = 0;
    for (size_t i = 0; i < opt.nblobs; i++) {
        if (opt.blobs[i].size != 0)
            continue;
        zero_blobs++;
        struct bad_request q = {"byte 0 of an empty blob", A, C,
                                opt.blobs[i].name, 0, 1};
        expect_failure(&q);
        expect_zero_length_ok("empty blob", &opt.blobs[i], 0, false);
    }

    /* Length 0 returns 0, with or without a destination. */
    expect_zero_length_ok("length 0", big, 0, false);
    expect_zero_length_ok("length 0, NULL buffer", big, 0, true);
    expect_zero_length_ok("length 0 in the middle", big, sz / 2, false);

    printf("phase a: error handling OK (%lu checks, %u empty blobs, %.2f s); "
           "e.g. \"%s\"\n",
           checks_done, zero_blobs, now_seconds() - t0, example);
}

/* ------------------------------------------------------------------------
 * Phase b: many threads, random ranges
 * ------------------------------------------------------------------------ */

static void phase_b(void)
{
    watchdog("phase b (random ranges)");
    double t0 = now_seconds();
    struct reader *rs = xmalloc(opt.threads * sizeof *rs);
    for (unsigned i = 0; i < opt.threads; i++)
        reader_init(&rs[i], "phase b", i, opt.max_len, opt.reads, false);
    readers_start(rs, opt.threads);
    readers_join(rs, opt.threads);
    unsigned long ok = 0;
    uint64_t bytes = 0;
    for (unsigned i = 0; i < opt.threads; i++) {
        ok += rs[i].ok;
        bytes += rs[i].bytes;
        reader_free(&rs[i]);
    }
    free(rs);
    double dt = now_seconds() - t0;
    printf("phase b: %u threads x %lu reads = %lu ranges verified "
           "(%.1f MiB, %.2f s, %.0f MiB/s)\n",
           opt.threads, opt.reads, ok, (double)bytes / MIB, dt,
           (double)bytes / MIB / (dt > 0 ? dt : 1));
}

/* ------------------------------------------------------------------------
 * Phase c: reads racing shutdown()
 * ------------------------------------------------------------------------ */

#define CYCLE_READERS 4

static void phase_c(void)
{
    double t0 = now_seconds();
    uint64_t rng = opt.seed ^ 0xC0C0C0C0ull;
    unsigned long ok = 0, failed = 0, shutdowns = 0;
    /* Shorter reads than phase b, so many are in flight at each shutdown. */
    size_t max_len = min_size(opt.max_len, 2u << 20);
    struct reader rs[CYCLE_READERS];
    for (unsigned i = 0; i < CYCLE_READERS; i++)
        reader_init(&rs[i], "phase c", i, max_len, 0, true);

    for (unsigned cycle = 0; cycle < opt.cycles; cycle++) {
        watchdog("phase c (reads racing shutdown)");
        for (unsigned i = 0; i < CYCLE_READERS; i++)
            rs[i].rng ^= rng_next(&rng);
        readers_start(rs, CYCLE_READERS);
        /* One to three shutdowns at random moments, sometimes before the
         * readers have even started. */
        unsigned n = 1 + (unsigned)rng_below(&rng, 3);
        for (unsigned k = 0; k < n; k++) {
            sleep_us(rng_below(&rng, 4000));
            lib.shutdown();
            shutdowns++;
        }
        /* Let the readers bring the library back up before stopping. */
        sleep_us(rng_below(&rng, 3000));
        readers_join(rs, CYCLE_READERS);
    }
    const char *example = NULL;
    for (unsigned i = 0; i < CYCLE_READERS; i++) {
        ok += rs[i].ok;
        failed += rs[i].failed;
        if (rs[i].failed > 0 && example == NULL)
            example = rs[i].first_failure;
    }
    if (opt.cycles > 0 && ok == 0)
        fail("phase c: not one read succeeded in %u cycles (e.g. \"%s\")",
             opt.cycles, example ? example : "");

    /* After the last shutdown the library must come back up on its own. */
    watchdog("phase c (reads after the last shutdown)");
    lib.shutdown();
    shutdowns++;
    for (unsigned i = 0; i < 16; i++) {
        const struct blob *b;
        size_t off, len;
        pick_range(&rs[0].rng, max_len, &b, &off, &len);
        verified_read("phase c (after shutdown)", b, off, len, rs[0].buf,
                      rs[0].truth, false, NULL);
    }
    printf("phase c: %u cycles, %lu shutdowns: %lu reads correct, %lu failed "
           "with a message%s%s%s, 0 wrong (%.2f s)\n",
           opt.cycles, shutdowns, ok, failed, example ? " (e.g. \"" : "",
           example ? example : "", example ? "\")" : "",
           now_seconds() - t0);
    for (unsigned i = 0; i < CYCLE_READERS; i++)
        reader_free(&rs[i]);
}

/* ------------------------------------------------------------------------
 * Phase d: fork() while readers are busy
 * ------------------------------------------------------------------------ */

#define FORK_READERS 4
#define CHILD_READS 24
/* Phase d's fresh cache directories use the library's default block size:
 * big blocks take long enough to fill that fork() lands inside fills. */
#define FORK_BLOCK_SIZE "16M"

/* Points BLOBCACHE_DIR at a fresh directory under the scratch directory.
 * The library reads it at the first blob_read after load or shutdown (and
 * in a forked child, which starts fresh). */
static void use_fresh_cache_dir(const char *tag, unsigned n)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s-%u", opt.scratch, tag, n);
    if (setenv("BLOBCACHE_DIR", dir, 1) != 0)
        fail("setenv: %s", strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int type,
                        struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fail("removing %s: %s", path, strerror(errno));
    return 0;
}

/* Removes a round's cache directories once the library is shut down and
 * no reader runs: 200 rounds would otherwise keep about 14 GB. */
static void remove_round_dirs(unsigned n)
{
    static const char *tags[] = {"parent", "child"};
    for (unsigned i = 0; i < 2; i++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%s-%u", opt.scratch, tags[i], n);
        if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 &&
            errno != ENOENT)
            fail("removing %s: %s", dir, strerror(errno));
    }
}

/*
 * The child: reads at once, with the parent's threads frozen mid-call. It
 * first reads, from the parent's cache directory, the very ranges the
 * parent's threads had in flight (blocks that may be half-filled, their
 * locks taken), then random ones.
 */
__attribute__((noreturn))
static void child_main(unsigned n, struct reader *parent, unsigned nparent)
{
    /* A pending alarm is not inherited: arm the child's own watchdog. */
    watchdog("phase d (forked child)");
    size_t max_len = min_size(opt.max_len, 2u << 20);
    unsigned char *buf = xmalloc(max_len + CANARY_LEN);
    unsigned char *truth = xmalloc(max_len);
    uint64_t rng = opt.seed ^ (0xD0D0ull + n);
    for (unsigned i = 0; i < nparent; i++) {
        /* The three fields may be from two different reads (or none:
         * cur_len 0); skip those. */
        size_t bi = atomic_load(&parent[i].cur_blob);
        size_t off = atomic_load(&parent[i].cur_off);
        size_t len = min_size(atomic_load(&parent[i].cur_len), max_len);
        if (bi < opt.nblobs && len > 0 && off < opt.blobs[bi].size &&
            len <= opt.blobs[bi].size - off)
            verified_read("phase d (forked child, parent's range)",
                          &opt.blobs[bi], off, len, buf, truth, false, NULL);
    }
    /* Every other child then moves to a cache directory of its own, so its
     * random reads fill from the origin; the others stay in the parent's. */
    if (opt.scratch && n % 2 == 1) {
        lib.shutdown();
        use_fresh_cache_dir("child", n);
    }
    for (unsigned i = 0; i < CHILD_READS; i++) {
        const struct blob *b;
        size_t off, len;
        pick_range(&rng, max_len, &b, &off, &len);
        verified_read("phase d (forked child)", b, off, len, buf, truth,
                      false, NULL);
        /* Halfway, a shutdown and a restart inside the child too. */
        if (i == CHILD_READS / 2)
            lib.shutdown();
    }
    _exit(0);
}

static void phase_d(void)
{
    if (opt.forks == 0) {
        printf("phase d: skipped (no forks asked for%s)\n",
               DEFAULT_FORKS == 0 ? "; off by default under ASan" : "");
        return;
    }
    double t0 = now_seconds();
    uint64_t rng = opt.seed ^ 0xD0D0D0D0ull;
    unsigned long parent_reads = 0;
    struct reader rs[FORK_READERS];
    for (unsigned i = 0; i < FORK_READERS; i++)
        reader_init(&rs[i], "phase d", i, opt.max_len, 0, false);

    for (unsigned n = 0; n < opt.forks; n++) {
        watchdog("phase d (fork)");
        if (opt.scratch) {
            /* A cold cache with big blocks, so the parent's threads are
             * filling blocks (holding locks, writing files) when fork()
             * happens. The environment changes only while the library
             * is shut down and no reader runs. */
            lib.shutdown();
            if (n > 0)
                remove_round_dirs(n - 1);
            if (setenv("BLOBCACHE_BLOCK_SIZE", FORK_BLOCK_SIZE, 1) != 0)
                fail("setenv: %s", strerror(errno));
            use_fresh_cache_dir("parent", n);
        }
        unsigned long begun[FORK_READERS];
        for (unsigned i = 0; i < FORK_READERS; i++) {
            rs[i].rng ^= rng_next(&rng);
            begun[i] = atomic_load(&rs[i].begun);
        }
        readers_start(rs, FORK_READERS);
        /* Fork once every reader is inside its first read of this cold
         * cache (almost surely a fill), give or take a millisecond. */
        for (unsigned i = 0; i < FORK_READERS; i++)
            while (atomic_load(&rs[i].begun) == begun[i])
                sleep_us(20);
        sleep_us(rng_below(&rng, 1000));

        fflush(NULL); /* the child must not inherit buffered output */
        pid_t pid = fork();
        if (pid < 0)
            fail("fork: %s", strerror(errno));
        if (pid == 0)
            child_main(n, rs, FORK_READERS);

        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR)
                fail("waitpid: %s", strerror(errno));
        if (WIFSIGNALED(status))
            fail("phase d: forked child %u was killed by signal %d (%s)", n,
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail("phase d: forked child %u exited with status %d", n,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        /* And the parent's readers keep going across the fork. */
        sleep_us(rng_below(&rng, 2000));
        readers_join(rs, FORK_READERS);
    }
    for (unsigned i = 0; i < FORK_READERS; i++) {
        parent_reads += rs[i].ok;
        reader_free(&rs[i]);
    }
    if (opt.scratch) {
        lib.shutdown();
        remove_round_dirs(opt.forks - 1);
    }
    printf("phase d: %u forks with %d reader threads busy: every child read "
           "%d ranges correctly; parent %lu reads correct (%.2f s)\n",
           opt.forks, FORK_READERS, CHILD_READS, parent_reads,
           now_seconds() - t0);
}

/* ------------------------------------------------------------------------
 * Options and main
 * ------------------------------------------------------------------------ */

static void usage(FILE *to)
{
    fprintf(to,
        "usage: streamer_like [options] LIBRARY ORIGIN_ROOT ACCOUNT CONTAINER "
        "BLOB...\n"
        "Loads LIBRARY as the Run:ai streamer does and checks its reads of\n"
        "ORIGIN_ROOT/ACCOUNT/CONTAINER/BLOB (configure the library with\n"
        "BLOBCACHE_ORIGIN=file://ORIGIN_ROOT).\n"
        "  -t N   phase b threads (env STREAMER_LIKE_THREADS, default 16)\n"
        "  -n N   phase b reads per thread (STREAMER_LIKE_READS, 2000)\n"
        "  -c N   phase c shutdown cycles (STREAMER_LIKE_CYCLES, 50)\n"
        "  -f N   phase d forks (STREAMER_LIKE_FORKS, 8; 0 under ASan)\n"
        "  -s N   random seed (STREAMER_LIKE_SEED, default from the clock)\n"
        "  -L N   longest read in bytes (default 8388608, the streamer's chunk)\n"
        "  -B N   block size for boundary picks (default BLOBCACHE_BLOCK_SIZE,\n"
        "         else 16M; K/M/G suffixes)\n"
        "  -S DIR scratch directory: phase d then uses fresh cache directories\n"
        "         under it (block size " FORK_BLOCK_SIZE "), so fork() lands in\n"
        "         the middle of fills\n"
        "  -T N   seconds a phase, cycle or fork may take before it is\n"
        "         reported as a hang (default 300)\n"
        "  -v     print every expected error message\n");
}

/* Parses "123", "64K", "1M", "2G"; 0 on error. */
static size_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return 0;
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    return *end == '\0' ? (size_t)v : 0;
}

static unsigned long parse_count(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        fail("invalid %s: %s", what, s);
    return v;
}

static unsigned long env_count(const char *name, unsigned long fallback)
{
    const char *v = getenv(name);
    return v && *v ? parse_count(v, name) : fallback;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    opt.threads = (unsigned)env_count("STREAMER_LIKE_THREADS", 16);
    opt.reads = env_count("STREAMER_LIKE_READS", 2000);
    opt.cycles = (unsigned)env_count("STREAMER_LIKE_CYCLES", 50);
    opt.forks = (unsigned)env_count("STREAMER_LIKE_FORKS", DEFAULT_FORKS);
    opt.seed = env_count("STREAMER_LIKE_SEED", 0);
    opt.max_len = 8u << 20;
    opt.timeout = 300;
    const char *bs = getenv("BLOBCACHE_BLOCK_SIZE");
    opt.block_size = bs && *bs ? parse_size(bs) : 16u << 20;

    int c;
    while ((c = getopt(argc, argv, "t:n:c:f:s:L:B:S:T:vh")) != -1) {
        switch (c) {
        case 't': opt.threads = (unsigned)parse_count(optarg, "-t"); break;
        case 'n': opt.reads = parse_count(optarg, "-n"); break;
        case 'c': opt.cycles = (unsigned)parse_count(optarg, "-c"); break;
        case 'f': opt.forks = (unsigned)parse_count(optarg, "-f"); break;
        case 's': opt.seed = parse_count(optarg, "-s"); break;
        case 'L': opt.max_len = parse_size(optarg); break;
        case 'B': opt.block_size = parse_size(optarg); break;
        case 'S': opt.scratch = optarg; break;
        case 'T': opt.timeout = (unsigned)parse_count(optarg, "-T"); break;
        case 'v': opt.verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind < 5) {
        usage(stderr);
        return 2;
    }
    if (opt.block_size == 0 || opt.max_len == 0 || opt.threads == 0 ||
        opt.timeout == 0)
        fail("block size, longest read, threads and -T must be positive");
    if (opt.seed == 0)
        opt.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    const char *library = argv[optind];
    const char *root = argv[optind + 1];
    opt.account = argv[optind + 2];
    opt.container = argv[optind + 3];
    open_blobs(root, argv + optind + 4, (size_t)(argc - optind - 4));

    printf("streamer_like: seed %" PRIu64 " (rerun with -s %" PRIu64
           "), %zu blobs, block size %zu, reads up to %zu bytes\n",
           opt.seed, opt.seed, opt.nblobs, opt.block_size, opt.max_len);
    double t0 = now_seconds();
    watchdog("loading the library");
    load_library(library);
    phase_a();
    phase_b();
    phase_c();
    phase_d();
    /* As the streamer does when its last session closes. */
    lib.shutdown();
    alarm(0);
    printf("streamer_like: PASS (%.1f s)\n", now_seconds() - t0);
    return 0;
}
