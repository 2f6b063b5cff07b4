"""A second origin implementation for the integration tests: lighttpd on 127.0.0.1.

    with LighttpdOrigin(files={"a.bin": 200_000}, etags=False,
                        conf='url.redirect = ("^/r/302$" => "@BASE@/files/a.bin")') as o:
        ...                          # the same interface as origin.Origin (nginx)

Bugs of an HTTP client live between implementations: lighttpd answers ranges, If-Range
and redirects with code of its own (1.4, Debian package `lighttpd`). What it does:
- the same temp dir, files, ports, URLs, paths and access-log records as origin.Origin
  (one JSON object per request, through mod_accesslog's JSON escaping, with the fields
  tests read: method, uri, status, bytes_sent, range, if_range, etag, location ...);
- `conf` is added to the config as lighttpd directives, with origin.Origin's @TOKENS@;
  `etags=False` turns entity tags off (`static-file.etags`), leaving Last-Modified as the
  only validator;
- lighttpd runs in the foreground as our child (`-D`); a status page on a port of its own
  (not logged) tells when no connection is open any more, so log() waits until every
  request that has ended has its line (lighttpd, like nginx, logs a request when it ends).
  The log goes through a pipe to `cat`: lighttpd writes a log file only about once a
  second, but a pipe at once.

Python 3.11 standard library only."""

import os
import re
import shutil
import socket
import time

from origin import Origin, OriginError

LOG_FORMAT = {
    "port": "%p", "method": "%m", "uri": "%U%q", "request": "%r", "status": "%>s",
    "bytes_sent": "%O", "body_bytes_sent": "%b", "range": "%{Range}i",
    "if_range": "%{If-Range}i", "if_modified_since": "%{If-Modified-Since}i",
    "if_none_match": "%{If-None-Match}i", "authorization": "%{Authorization}i", "cookie": "%{Cookie}i",
    "want_repr_digest": "%{Want-Repr-Digest}i", "content_range": "%{Content-Range}o",
    "location": "%{Location}o", "etag": "%{ETag}o", "user_agent": "%{User-Agent}i",
    "accept_encoding": "%{Accept-Encoding}i", "content_encoding": "%{Content-Encoding}o",
}


def find_lighttpd():
    for cand in (shutil.which("lighttpd"), "/usr/sbin/lighttpd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("lighttpd not found (Debian: apt-get install lighttpd)")


class LighttpdOrigin(Origin):
    NAME = "lighttpd"
    CONF = "lighttpd.conf"
    PID = "lighttpd.pid"

    def __init__(self, files=None, conf="", etags=True):
        super().__init__(files=files)
        self.conf = conf
        self.etags = etags

    def _find_server(self):
        return find_lighttpd()

    def _argv(self):
        return [self.server_exe, "-D", "-f", self.path(self.CONF)]

    def _config(self):
        d = self.dir
        fmt = "{" + ",".join(f'\\"{k}\\":\\"{v}\\"' for k, v in LOG_FORMAT.items()) + "}"
        # As root, lighttpd keeps running as root when no server.username is set (it
        # refuses to be told uid 0); the temp tree is world-readable either way.
        return f"""server.document-root = "{d}/www"
server.bind = "127.0.0.1"
server.port = {self.port}
server.pid-file = "{d}/{self.PID}"
server.errorlog = "{d}/logs/error.log"
server.tag = "lighttpd"
server.modules += ("mod_access", "mod_accesslog", "mod_redirect", "mod_status", "mod_setenv")
mimetype.assign = ("" => "application/octet-stream")
static-file.etags = "{"enable" if self.etags else "disable"}"
accesslog.filename = "|exec /bin/cat >> {d}/logs/access.log"
accesslog.escaping = "json"
accesslog.format = "{fmt}"
$SERVER["socket"] == "127.0.0.1:{self.status_port}" {{
    status.status-url = "/status"
    accesslog.filename = ""
}}
{self._subst(self.conf)}
"""

    def _requests_counted(self):
        """Requests lighttpd has ended, once no connection but ours is open (each has then
        been logged); more than are logged while one is, so that log() waits; None when
        lighttpd does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.status_port), timeout=2) as s:
                s.sendall(b"GET /status?auto HTTP/1.0\r\nHost: status\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        except OSError:
            return None
        m = re.search(rb"BusyServers:\s*(\d+)", data)
        if m is None:
            return None
        logged = len(self._log_lines()) - self._lines_at_launch
        if int(m.group(1)) > 1:
            return logged + 1
        # Every request has gone into the pipe; `cat` may not have written it out yet.
        time.sleep(0.02)
        now = len(self._log_lines()) - self._lines_at_launch
        return now if now == logged else now + 1


__all__ = ["LighttpdOrigin", "OriginError"]
