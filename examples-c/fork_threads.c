/*
 * fork_threads: forks again and again while the library is starting
 * threads, and checks that every child can start the library and read.
 *
 *   fork_threads LIBRARY ORIGIN_ROOT ACCOUNT CONTAINER BLOB FORKS
 *
 * Run with BLOBCACHE_ORIGIN=file://ORIGIN_ROOT and a BLOBCACHE_DIR that
 * cannot be created, so every read goes straight to the directory origin,
 * whose every call runs on a thread the library starts: reader threads
 * here make the library start thousands of threads a second. Meanwhile the
 * main thread forks FORKS times; each child reads the blob's first bytes at
 * once (which starts the library's worker threads in the child) and checks
 * them against the file.
 *
 * What it catches: glibc's pthread_create takes a finished thread's stack
 * from its cache under a lock, then frees that thread's TLS blocks with
 * the lock released; a fork in between leaves the child a cached stack
 * whose blocks were already freed, and the child's first pthread_create
 * frees them again ("double free or corruption"). The library starts its
 * threads with forks held off (crates/core/src/fork.rs); without that, 2 children in
 * about 25,000 aborted here, so a short run rarely catches a regression:
 * the long form of scripts/test-c.sh runs 20,000 forks. A child that dies,
 * hangs (an alarm ends it) or reads wrong bytes fails the run.
 *
 * The library is loaded as the streamer loads it: dlopen, dlsym, never
 * closed.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
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
#include <unistd.h>

#define READERS 6
#define READ_LEN 4096
#define CHILD_LEN 65536
#define CHILD_SECONDS 30

typedef ssize_t (*blob_read_fn)(const char *, const char *, const char *,
                                void *, size_t, size_t, char *, size_t);

static blob_read_fn blob_read_p;
static const char *account, *container, *blob;
static size_t blob_size;
static atomic_bool stop;
static atomic_ulong parent_reads;

__attribute__((noreturn, format(printf, 1, 2)))
static void fail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fork_threads: FAIL: %s\n", msg);
    _exit(1);
}

static void *reader(void *arg)
{
    uint64_t x = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    char *buf = malloc(READ_LEN);
    char err[512];
    if (!buf)
        fail("out of memory");
    while (!atomic_load(&stop)) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t off = (size_t)((x >> 33) % (blob_size - READ_LEN));
        /* What counts here is the threads each read starts; the bytes
         * are checked by the children (and by streamer_like). */
        if (blob_read_p(account, container, blob, buf, off, READ_LEN, err,
                        sizeof err) == READ_LEN)
            atomic_fetch_add(&parent_reads, 1);
    }
    free(buf);
    return NULL;
}

__attribute__((noreturn))
static void child(const unsigned char *truth)
{
    alarm(CHILD_SECONDS);
    unsigned char *buf = malloc(CHILD_LEN);
    char err[512];
    if (!buf)
        fail("child: out of memory");
    ssize_t r = blob_read_p(account, container, blob, buf, 0, CHILD_LEN, err,
                            sizeof err);
    if (r != CHILD_LEN)
        fail("child: blob_read returned %zd: %s", r, err);
    if (memcmp(buf, truth, CHILD_LEN) != 0)
        fail("child: wrong bytes");
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: fork_threads LIBRARY ORIGIN_ROOT ACCOUNT "
                        "CONTAINER BLOB FORKS\n");
        return 2;
    }
    account = argv[3];
    container = argv[4];
    blob = argv[5];
    unsigned long forks = strtoul(argv[6], NULL, 10);

    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s/%s", argv[2], account, container,
             blob);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        fail("%s: %s", path, strerror(errno));
    blob_size = (size_t)st.st_size;
    if (blob_size < CHILD_LEN + READ_LEN)
        fail("%s: needs at least %d bytes", path, CHILD_LEN + READ_LEN);
    unsigned char *truth = malloc(CHILD_LEN);
    if (!truth || pread(fd, truth, CHILD_LEN, 0) != CHILD_LEN)
        fail("reading %s", path);
    close(fd);

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        fail("dlopen: %s", dlerror());
    blob_read_p = (blob_read_fn)dlsym(lib, "blob_read");
    if (!blob_read_p)
        fail("dlsym blob_read: %s", dlerror());

    pthread_t threads[READERS];
    for (uintptr_t i = 0; i < READERS; i++)
        if (pthread_create(&threads[i], NULL, reader, (void *)i) != 0)
            fail("pthread_create");
    while (atomic_load(&parent_reads) < 100)
        usleep(1000);

    for (unsigned long n = 0; n < forks; n++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            fail("fork: %s", strerror(errno));
        if (pid == 0)
            child(truth);
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR)
                fail("waitpid: %s", strerror(errno));
        if (WIFSIGNALED(status))
            fail("child %lu of %lu was killed by signal %d (%s)", n, forks,
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail("child %lu of %lu exited with status %d", n, forks,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < READERS; i++)
        pthread_join(threads[i], NULL);
    printf("fork_threads: %lu forks while %d threads read (%lu reads): every "
           "child started the library and read right\n",
           forks, READERS, atomic_load(&parent_reads));
    free(truth);
    return 0;
}
