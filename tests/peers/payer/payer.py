"""A payer's Da Vinci PAS endpoint stand-in for the prior-authorization tests (stdlib only).

POST {base}/Claim/$submit takes a PAS request Bundle: it must be a FHIR Bundle whose first
entry is a Claim with use = preauthorization; the answer is a Bundle whose first entry is
a ClaimResponse (outcome "queued": a human reviews it), or an OperationOutcome with 400.
GET /_log lists every request received (path, content type, body as JSON).

    python payer.py   # prints "READY http://127.0.0.1:PORT/fhir" and serves until stdin closes
"""

import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = []


def outcome(text):
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_log":
            self.answer(200, LOG)
        else:
            self.answer(404, outcome("not found"))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        LOG.append({"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body})
        if self.path != "/fhir/Claim/$submit":
            return self.answer(404, outcome("only Claim/$submit is served"))
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            return self.answer(400, outcome("a PAS request is a Bundle"))
        entries = body.get("entry") or []
        claim = entries[0].get("resource", {}) if entries else {}
        if claim.get("resourceType") != "Claim" or claim.get("use") != "preauthorization":
            return self.answer(400, outcome("the first entry must be a Claim with use preauthorization"))
        response = {
            "resourceType": "ClaimResponse",
            "id": str(uuid.uuid4()),
            "status": "active",
            "type": claim.get("type"),
            "use": "preauthorization",
            "patient": claim.get("patient"),
            "created": claim.get("created"),
            "insurer": claim.get("insurer"),
            "request": {"reference": "Claim/" + str(claim.get("id"))},
            "outcome": "queued",
        }
        self.answer(200, {"resourceType": "Bundle", "type": "collection",
                          "entry": [{"resource": response}]})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY http://127.0.0.1:{server.server_address[1]}/fhir", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
