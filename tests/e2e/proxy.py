"""A loopback HTTP/1.1 proxy that records every request passing to the origin
(method, path, Range header) and relays the bytes untouched, so a test can
count what was fetched from Azurite independently of the library's counters.

Only the client-to-server direction is parsed (request heads, and bodies by
Content-Length); answers are relayed as raw bytes, which keeps keep-alive
connections working.
"""

import asyncio
import re
import threading
from urllib.parse import unquote

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class Request:
    def __init__(self, method, path, headers):
        self.method = method
        self.path = unquote(path.split("?", 1)[0])
        self.query = path.split("?", 1)[1] if "?" in path else ""
        self.headers = headers

    def byte_range(self):
        """(start, end exclusive) of a ranged request, else None."""
        v = self.headers.get("x-ms-range") or self.headers.get("range")
        m = _RANGE.fullmatch(v.strip()) if v else None
        if not m:
            return None
        return int(m.group(1)), (int(m.group(2)) + 1 if m.group(2) else None)


class CountingProxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.requests = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    def _run(self, started):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    def reset(self):
        with self._lock:
            self.requests = []

    def seen(self):
        with self._lock:
            return list(self.requests)

    async def _client(self, creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            cwriter.close()
            return
        back = asyncio.ensure_future(self._pipe(ureader, cwriter))
        try:
            while True:
                head = await creader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                with self._lock:
                    self.requests.append(Request(method, path, headers))
                uwriter.write(head)
                n = int(headers.get("content-length", "0") or 0)
                while n > 0:
                    chunk = await creader.read(min(n, 1 << 20))
                    if not chunk:
                        break
                    uwriter.write(chunk)
                    n -= len(chunk)
                await uwriter.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            uwriter.close()
            await back
            cwriter.close()

    @staticmethod
    async def _pipe(reader, writer):
        try:
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    def close(self):
        def stop():
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)
