"""Drives tidegate with Python's poplib and prints what it saw, one "KEY VALUE" a line.

Usage: poplib_client.py MODE HOST PORT USER PASSWORD CAFILE [--delete-first]
  MODE: plain (USER/PASS without TLS), stls (STLS, then USER/PASS),
        ssl (POP3_SSL on an implicit-TLS port).
The server certificate is verified against CAFILE (hostname 127.0.0.1).
With --delete-first, message 1 is deleted before QUIT and a second session reports
STAT afterwards. Message bytes are base64 so the Rust side can compare them exactly.
Output keys: welcome, capa, pass, stat, list, uidl, message (one per message, base64),
top (base64), dele, quit, stat_after.
"""

import base64
import poplib
import ssl
import sys


def connect(mode, host, port, context):
    if mode == "ssl":
        return poplib.POP3_SSL(host, port, context=context, timeout=10)
    conn = poplib.POP3(host, port, timeout=10)
    if mode == "stls":
        conn.stls(context=context)
    return conn


def main():
    mode, host, port, user, password, cafile = sys.argv[1:7]
    delete_first = "--delete-first" in sys.argv[7:]
    context = ssl.create_default_context(cafile=cafile)
    conn = connect(mode, host, int(port), context)
    emit("welcome", conn.getwelcome().decode())
    emit("capa", " ".join(sorted(conn.capa().keys())))
    conn.user(user)
    emit("pass", conn.pass_(password).decode())
    count, size = conn.stat()
    emit("stat", f"{count} {size}")
    _, listing, _ = conn.list()
    emit("list", ",".join(line.decode() for line in listing))
    _, uids, _ = conn.uidl()
    emit("uidl", ",".join(line.decode() for line in uids))
    for number in range(1, count + 1):
        _, lines, _ = conn.retr(number)
        emit("message", encode(lines))
    _, top, _ = conn.top(1, 0)
    emit("top", encode(top))
    if delete_first:
        emit("dele", conn.dele(1).decode())
    emit("quit", conn.quit().decode())
    if delete_first:
        again = connect(mode, host, int(port), context)
        again.user(user)
        again.pass_(password)
        count, size = again.stat()
        emit("stat_after", f"{count} {size}")
        again.quit()


def emit(key, value):
    print(key, value, flush=True)


def encode(lines):
    """poplib strips CRLF and the stuffed dots; put the CRLFs back."""
    return base64.b64encode(b"".join(line + b"\r\n" for line in lines)).decode()


if __name__ == "__main__":
    main()
