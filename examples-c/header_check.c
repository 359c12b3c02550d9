/*
 * header_check: include/blobcache.h compiles next to the system headers
 * that declare shutdown(2), read(2) and the stdio functions, under
 * -Wall -Wextra -Werror -pedantic (scripts/test-c.sh compiles it as C11,
 * C99 and, when a C++ compiler is there, C++11), and its function-pointer
 * types fit what dlsym finds in libblobcache.so.
 */

#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blobcache.h"

/* The streamer's names, looked up as it does (dlsym), have these types. */
static blobcache_abi_version_fn abi_version = blobcache_abi_version;
static blobcache_blob_read_fn blob_read_fn = blobcache_read;
static blobcache_shutdown_fn shutdown_fn = blobcache_shutdown;

int main(void)
{
    /* shutdown(2) keeps its own prototype. */
    int (*socket_shutdown)(int, int) = shutdown;
    (void)socket_shutdown;
    (void)blob_read_fn;
    (void)shutdown_fn;
    (void)blobcache_stats_json;
    (void)blobcache_check_config;
    printf("header_check: blobcache.h compiles with <sys/socket.h>, "
           "<unistd.h> and <stdio.h>\n");
    return abi_version() == 1 ? 0 : 1;
}
