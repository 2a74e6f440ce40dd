"""Verifies the first DKIM-Signature of a message with dkimpy, the key record given on the
command line instead of DNS. Prints "pass" or "fail" (and the record name asked for).

Usage: verify.py MESSAGE_FILE RECORD_NAME TXT_RECORD
"""
import sys

import dkim

message_path, record_name, record = sys.argv[1], sys.argv[2], sys.argv[3]
with open(message_path, "rb") as f:
    message = f.read()

asked = []


def dnsfunc(name, timeout=5):
    asked.append(name.decode() if isinstance(name, bytes) else name)
    return record.encode()


ok = dkim.verify(message, dnsfunc=dnsfunc)
names = ",".join(n.rstrip(".") for n in asked)
if names != record_name:
    print("asked for %s, expected %s" % (names, record_name))
    sys.exit(2)
print("pass" if ok else "fail")
