"""Drives tidegate with Python's smtplib and prints what it saw, one "KEY VALUE" a line.

Usage:
  smtplib_client.py send HOST PORT FROM TO[,TO...] FILE [options]
      --starttls CAFILE   STARTTLS first, verifying the certificate against CAFILE
      --auth MECH USER PASSWORD
                          authenticate with PLAIN or LOGIN (after STARTTLS if given)
      --smtputf8          MAIL ... SMTPUTF8 (UTF-8 addresses)
      --8bitmime          MAIL ... BODY=8BITMIME
  smtplib_client.py lmtp HOST PORT FROM TO[,TO...] FILE
      LMTP (smtplib.LMTP): one reply per accepted recipient after DATA.

FILE holds the message exactly as it should arrive (CRLF line ends); smtplib dot-stuffs
it. Output keys: ehlo (the extensions, space-separated), starttls, auth, mail, rcpt
(ADDRESS CODE TEXT per recipient), data (the final reply; for LMTP one per accepted
recipient: ADDRESS CODE TEXT), error (CODE TEXT of an SMTP exception), quit.
"""

import smtplib
import ssl
import sys


def emit(key, value):
    print(key, value, flush=True)


def text(resp):
    return resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)


def options(argv):
    opts = {"starttls": None, "auth": None, "smtputf8": False, "8bitmime": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--starttls":
            opts["starttls"] = argv[i + 1]
            i += 2
        elif arg == "--auth":
            opts["auth"] = argv[i + 1 : i + 4]
            i += 4
        elif arg in ("--smtputf8", "--8bitmime"):
            opts[arg[2:]] = True
            i += 1
        else:
            raise SystemExit(f"unknown option {arg}")
    return opts


def transaction(conn, sender, recipients, message, mail_options):
    """MAIL, RCPT each, DATA: step by step so every reply can be reported."""
    code, resp = conn.mail(sender, mail_options)
    emit("mail", f"{code} {text(resp)}")
    accepted = []
    for rcpt in recipients:
        code, resp = conn.rcpt(rcpt)
        emit("rcpt", f"{rcpt} {code} {text(resp)}")
        if code == 250:
            accepted.append(rcpt)
    if not accepted:
        conn.rset()
        return accepted
    code, resp = conn.data(message)
    first = accepted[0] if isinstance(conn, smtplib.LMTP) else "*"
    emit("data", f"{first} {code} {text(resp)}")
    if isinstance(conn, smtplib.LMTP):
        # RFC 2033 §4.2: one reply per accepted recipient; smtplib reads the first.
        for rcpt in accepted[1:]:
            code, resp = conn.getreply()
            emit("data", f"{rcpt} {code} {text(resp)}")
    return accepted


def send(host, port, sender, recipients, path, opts):
    with open(path, "rb") as f:
        message = f.read()
    conn = smtplib.SMTP(host, int(port), local_hostname="client.test", timeout=30)
    conn.ehlo()
    emit("ehlo", " ".join(sorted(conn.esmtp_features)))
    if opts["starttls"]:
        context = ssl.create_default_context(cafile=opts["starttls"])
        context.check_hostname = False
        code, resp = conn.starttls(context=context)
        emit("starttls", f"{code} {text(resp)}")
        conn.ehlo()
        emit("ehlo", " ".join(sorted(conn.esmtp_features)))
    if opts["auth"]:
        mech, user, password = opts["auth"]
        conn.user, conn.password = user, password
        method = {"PLAIN": conn.auth_plain, "LOGIN": conn.auth_login}[mech]
        try:
            code, resp = conn.auth(mech, method, initial_response_ok=(mech == "PLAIN"))
            emit("auth", f"{code} {text(resp)}")
        except smtplib.SMTPAuthenticationError as e:
            emit("auth", f"{e.smtp_code} {text(e.smtp_error)}")
            emit("quit", conn.quit()[0])
            return
    mail_options = []
    if opts["smtputf8"]:
        mail_options.append("SMTPUTF8")
    if opts["8bitmime"]:
        mail_options.append("BODY=8BITMIME")
    transaction(conn, sender, recipients, message, mail_options)
    emit("quit", conn.quit()[0])


def lmtp(host, port, sender, recipients, path):
    with open(path, "rb") as f:
        message = f.read()
    conn = smtplib.LMTP(host, int(port), local_hostname="frontend.test", timeout=30)
    conn.ehlo()
    emit("ehlo", " ".join(sorted(conn.esmtp_features)))
    transaction(conn, sender, recipients, message, [])
    emit("quit", conn.quit()[0])


def main():
    command, host, port, sender, to, path = sys.argv[1:7]
    recipients = to.split(",")
    try:
        if command == "send":
            send(host, port, sender, recipients, path, options(sys.argv[7:]))
        elif command == "lmtp":
            lmtp(host, port, sender, recipients, path)
        else:
            raise SystemExit(f"unknown command {command}")
    except smtplib.SMTPResponseException as e:
        emit("error", f"{e.smtp_code} {text(e.smtp_error)}")


if __name__ == "__main__":
    main()
