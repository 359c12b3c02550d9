"""A loopback forwarder that takes plain TCP and speaks TLS upstream, so that
our library (whose HTTP client trusts only the built-in web PKI roots) can
read from the HTTPS Azurite that the streamer's own client reads from, and
the two cold loads of item 6 both pay the emulator's TLS. The forwarder does
the TLS client's work that rustls would do inside the library, plus one more
copy: it can only make our side slower.

    python tls_proxy.py LISTEN_PORT UPSTREAM_PORT CA_PEM

Serves until killed. One thread per connection (OpenSSL and socket calls
release the GIL).
"""

import select
import socket
import ssl
import sys
import threading


def serve(client, upstream_port, ctx):
    """Forwards one connection in one thread (an SSL object must not be read
    and written from two threads at once)."""
    try:
        raw = socket.create_connection(("127.0.0.1", upstream_port))
        for s in (client, raw):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    except OSError:
        client.close()
        return
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        while True:
            ready = [up] if up.pending() else select.select([client, up], [], [])[0]
            for src, dst in ((client, up), (up, client)):
                if src not in ready:
                    continue
                # Readable at the TCP level need not mean application data
                # (a TLS 1.3 session ticket, half a record): never block in
                # an SSL read, or a request waiting on the client side stalls.
                src.setblocking(False)
                try:
                    n = src.recv_into(buf)
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue
                finally:
                    src.setblocking(True)
                if not n:
                    return
                dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        client.close()
        up.close()


def main():
    listen_port, upstream_port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ctx = ssl.create_default_context(cafile=ca)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(128)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=serve, args=(client, upstream_port, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
