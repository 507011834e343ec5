"""What the SDK checks share: `check`, the arguments, JSON calls to the sandbox."""

import argparse
import json
import sys
import urllib.request


def check(cond, what):
    """Exits non-zero (with a message) on a failed check; prints one line per check passed."""
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def parse_args(*names, ints=()):
    """`--name VALUE` for each name, all required; those in `ints` read as integers."""
    ap = argparse.ArgumentParser()
    for k in names:
        ap.add_argument("--" + k, required=True, type=int if k in ints else str)
    return ap.parse_args()


def http_json(method, url, body=None):
    """(status, JSON reply or None) of a call with an optional JSON body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


def sandbox_get(base, path):
    """`GET base + path` as JSON."""
    return http_json("GET", base + path)[1]


def org_entry(base, kind, pred):
    """The entry of `/_sandbox/org` (`kind` = "users" or "departments") matching `pred`, or None."""
    return next((e for e in sandbox_get(base, "/_sandbox/org")[kind] if pred(e)), None)


def expect_error(call, code_of, code, what):
    """`call()` must raise an exception whose `code_of(e)` is `code`."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - each SDK raises its own type
        check(code_of(e) == code, f"{what} ({code_of(e)!r}: {e})")
        return
    check(False, f"{what}: no error raised")
