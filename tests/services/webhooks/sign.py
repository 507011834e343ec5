"""Standard Webhooks signatures by the official libraries, for huitong's verifier tests.

Reads one JSON object per line on stdin and answers one per line on stdout:
  {"op": "sign", "secret": "whsec_…", "id": "msg_…", "timestamp": 1700000000, "body": "…"}
    -> {"standardwebhooks": "v1,…", "svix": "v1,…"}
  {"op": "verify", "secret": …, "id": …, "timestamp": …, "body": …, "signature": "v1,…"}
    -> {"standardwebhooks": true|false, "svix": true|false}
"""
import datetime
import json
import sys

from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook


def main():
    for line in sys.stdin:
        req = json.loads(line)
        when = datetime.datetime.fromtimestamp(req["timestamp"], tz=datetime.timezone.utc)
        libs = {"standardwebhooks": StandardWebhook(req["secret"]), "svix": SvixWebhook(req["secret"])}
        if req["op"] == "sign":
            out = {name: w.sign(req["id"], when, req["body"]) for name, w in libs.items()}
        else:
            out = {}
            headers = {
                "webhook-id": req["id"],
                "webhook-timestamp": str(req["timestamp"]),
                "webhook-signature": req["signature"],
            }
            for name, w in libs.items():
                try:
                    w.verify(req["body"], headers)
                    out[name] = True
                except Exception:
                    out[name] = False
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
