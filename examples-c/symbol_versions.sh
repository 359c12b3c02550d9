#!/usr/bin/env bash
# Why libblobcache.so cannot be made safe to link, and libblobcache_link.so
# exists (README, "The C interface"). Builds a toy provider that exports
# `void shutdown(void)` in three forms and calls shutdown(2) on a socket of
# its own (from another object, as the Rust standard library does), then
# checks, for each form:
#
#   1. the streamer's way: dlopen(RTLD_NOW | RTLD_LOCAL) + dlsym(h, "shutdown")
#      must find the library's function, not libc's shutdown(2);
#   2. the library's own socket shutdown, when loaded so, must reach libc;
#   3. a program linked with the library (-ltoy): its own shutdown(fd, how),
#      and the library's, must reach libc.
#
# Forms: unversioned (what libblobcache.so does); a non-default version
# (shutdown@BLOBCACHE_STREAMER, hidden from the link editor); the default
# version (shutdown@@BLOBCACHE_STREAMER). Needs cc; takes a second.
#
#   examples-c/symbol_versions.sh
set -euo pipefail
tmp=$(mktemp -d "${TMPDIR:-/tmp}/blobcache-symver.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

cat >own.c <<'EOF'
#include <sys/socket.h>
/* The library's own socket code (another object, as std's is). */
int toy_own_socket_shutdown(int fd) { return shutdown(fd, SHUT_WR); }
EOF
cat >export.c <<'EOF'
/* The streamer-facing `void shutdown(void)`, in one of three forms. */
int toy_calls;
int toy_count(void) { return toy_calls; }
#if defined(PLAIN)
void shutdown(void) { toy_calls++; }
#else
void toy_streamer_shutdown(void) { toy_calls++; }
# if defined(HIDDEN)
__asm__(".symver toy_streamer_shutdown, shutdown@BLOBCACHE_STREAMER");
# else
__asm__(".symver toy_streamer_shutdown, shutdown@@BLOBCACHE_STREAMER");
# endif
#endif
EOF
echo '{ global: shutdown; toy_*; local: *; };' >plain.map
cat >versioned.map <<'EOF'
BLOBCACHE_1 { global: toy_count; toy_own_socket_shutdown; local: *; };
BLOBCACHE_STREAMER { global: shutdown; } BLOBCACHE_1;
EOF
cat >check.h <<'EOF'
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
/* Whether shutdown(fd, SHUT_WR) through `f` gives the peer end-of-file. */
static const char *eof_after(int (*f)(int))
{
    int sv[2];
    char c;
    struct timeval tv = {0, 200000};
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return "socketpair failed";
    f(sv[0]);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = read(sv[1], &c, 1);
    close(sv[0]);
    close(sv[1]);
    return n == 0 ? "libc (ok)" : "the library's shutdown (WRONG)";
}
EOF
cat >dl.c <<'EOF'
#include <dlfcn.h>
#include "check.h"
int main(int argc, char **argv)
{
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return printf("dlopen: %s\n", dlerror()), 1;
    void *s = dlsym(h, "shutdown");
    int (*own)(int) = (int (*)(int))dlsym(h, "toy_own_socket_shutdown");
    printf(" | %-34s", s == NULL ? "NULL (WRONG)"
                      : s == dlsym(RTLD_DEFAULT, "shutdown") ? "libc's shutdown(2) (WRONG)"
                      : "the library's (ok)");
    printf(" | %-30s", eof_after(own));
    (void)argc;
    return 0;
}
EOF
cat >linked.c <<'EOF'
#include "check.h"
int toy_own_socket_shutdown(int fd);
static int mine(int fd) { return shutdown(fd, SHUT_WR); }
int main(void)
{
    printf(" | %-30s | %-30s |\n", eof_after(mine), eof_after(toy_own_socket_shutdown));
    return 0;
}
EOF

printf '  | %-34s | %-34s | %-30s | %-30s | %-30s |\n' "form of the export" \
    "streamer: dlsym(h, \"shutdown\")" "dlopen'd: library's own socket" \
    "linked: the program's socket" "linked: the library's socket"
for form in PLAIN HIDDEN DEFAULT; do
    mkdir "$form"
    map=versioned.map
    [[ $form == PLAIN ]] && map=plain.map
    cc -O1 -fPIC -shared -D"$form" -o "$form/libtoy.so" export.c own.c -Wl,--version-script="$map"
    cc -O1 -o "$form/dl" dl.c -ldl
    cc -O1 -o "$form/linked" linked.c -L"$form" -Wl,-rpath,"$PWD/$form" -ltoy
    case $form in
        PLAIN) label="unversioned" ;;
        HIDDEN) label="shutdown@BLOBCACHE_STREAMER" ;;
        DEFAULT) label="shutdown@@BLOBCACHE_STREAMER" ;;
    esac
    printf '  | %-34s' "$label"
    "$form/dl" "$PWD/$form/libtoy.so"
    "$form/linked"
done
