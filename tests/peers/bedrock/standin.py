#!/usr/bin/env python3
"""A local stand-in for the Amazon Bedrock Runtime, for Hearth's tests (issue #9).

It speaks the Bedrock Runtime wire format (restJson1) closely enough for the AWS SDK
for Rust to talk to it through an endpoint override, and it *verifies* the SigV4
signature of every model request against fixed test credentials, so a test that
passes proves the client really signs what it sends. Python 3.11 standard library
only. See README.md beside this file.

    python3 standin.py [--script script.json | --script-json '{...}']
                       [--access-key AKIDTEST] [--secret-key test-secret]
                       [--session-token TOKEN] [--region us-east-1] [--port 0]
                       [--ignore-stdin]
    python3 standin.py --self-test

Prints one line `READY http://127.0.0.1:PORT` on stdout once it listens, then serves
until its standard input closes (unless --ignore-stdin), or SIGTERM / SIGINT.

Routes:
  POST /model/{modelId}/converse   Converse: the reply text comes from the script.
  POST /model/{modelId}/invoke     InvokeModel, Titan Text Embeddings V2 only.
  GET  /_standin/log               JSON list of the model requests received.

Script (all keys optional):
  {
    "converse": [{"match": "substring of the user message", "reply": "text",
                  "model": "expected model id", "stop_reason": "end_turn",
                  "usage": {"inputTokens": 1, "outputTokens": 2},
                  "latency_ms": 12, "delay_ms": 0}, ...],
    "throttle": 0,          # the first N signed model calls answer 429 ThrottlingException
    "models": ["..."]       # the known model ids (default: KNOWN_MODELS below, plus
                            # every "model" named in "converse")
  }
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import hmac
import json
import math
import re
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_FOUND_REPLY = "NOT FOUND IN THE RECORD"

TITAN_V2 = "amazon.titan-embed-text-v2:0"
TITAN_DIMENSIONS = (256, 512, 1024)

KNOWN_MODELS = (
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-7-sonnet-20250219-v1:0",
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "us.anthropic.claude-sonnet-4-20250514-v1:0",
    TITAN_V2,
)

# How far the request's X-Amz-Date may be from our clock (AWS allows 15 minutes).
MAX_CLOCK_SKEW = _dt.timedelta(minutes=15)

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 "
    r"Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)/aws4_request,\s*"
    r"SignedHeaders=(?P<signed>[a-z0-9!#$%&'*+.^_`|~-]+(?:;[a-z0-9!#$%&'*+.^_`|~-]+)*),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)

WORD_RE = re.compile(r"[A-Za-z0-9]+")


class ApiError(Exception):
    """An error answered in the real Bedrock error shape."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


# --------------------------------------------------------------------------- SigV4


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode(value: str, safe: str = "") -> str:
    # RFC 3986 unreserved characters are never encoded; quote() adds "-_.~" to `safe`.
    return urllib.parse.quote(value, safe=safe)


def canonical_uri(raw_path: str) -> str:
    """The SigV4 canonical URI of a non-S3 service.

    `raw_path` is the path exactly as it arrived (already percent-encoded once by the
    client, e.g. `/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse`). Dot
    segments and empty segments are removed, then every segment is URI-encoded a second
    time, so `%3A` becomes `%253A` ("double encoding").
    """
    if not raw_path:
        return "/"
    path = raw_path if raw_path.startswith("/") else "/" + raw_path
    if "." in path or "//" in path:
        out: list[str] = []
        for seg in path.split("/"):
            if seg in ("", "."):
                continue
            if seg == "..":
                if out:
                    out.pop()
                continue
            out.append(seg)
        normalized = "/" + "/".join(out)
        if path.endswith(("/", "/.", "/..")) and not normalized.endswith("/"):
            normalized += "/"
        path = normalized
    return _uri_encode(path, safe="/")


def canonical_query(raw_query: str) -> str:
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    encoded = sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def sigv4_signature(secret: str, amz_date: str, region: str, service: str,
                    canonical_request: str) -> str:
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, _sha256_hex(canonical_request.encode("utf-8")),
    ])
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    key = _hmac(key, "aws4_request")
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def self_test() -> None:
    """Checks the verifier's SigV4 pieces against AWS's published examples."""
    # AWS SigV4 test suite, "get-vanilla".
    canonical = "\n".join([
        "GET", canonical_uri("/"), canonical_query(""),
        "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n",
        "host;x-amz-date", _sha256_hex(b""),
    ])
    got = sigv4_signature("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830T123600Z",
                          "us-east-1", "service", canonical)
    assert got == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", got
    # Double encoding of an already-encoded path, and path normalisation (test suite).
    assert canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse") == \
        "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
    assert canonical_uri("/example/..") == "/"
    assert canonical_uri("//example//") == "/example/"
    assert canonical_uri("/./") == "/"
    assert canonical_query("Param2=value2&Param1=value1") == "Param1=value1&Param2=value2"
    assert canonical_query("b=2&a=%20x&a=1") == "a=%20x&a=1&b=2"
    print("self-test ok")


def _header_value(handler: BaseHTTPRequestHandler, name: str) -> str | None:
    values = handler.headers.get_all(name)
    if values is None:
        return None
    return ",".join(" ".join(v.strip().split()) for v in values)


def verify_sigv4(handler: BaseHTTPRequestHandler, raw_path: str, raw_query: str, body: bytes,
                 cfg: "Config") -> tuple[bool, str, dict]:
    """(ok, reason, details). `reason` names what failed; it never echoes the body."""
    details: dict = {}
    auth = handler.headers.get("Authorization")
    if auth is None:
        return False, "no Authorization header", details
    m = AUTH_RE.match(auth.strip())
    if m is None:
        return False, "malformed Authorization header", details
    details.update(access_key=m["akid"], region=m["region"], service=m["service"],
                   signed_headers=m["signed"].split(";"))
    if m["akid"] != cfg.access_key:
        return False, "unknown access key id", details
    if m["service"] != "bedrock":
        return False, f"credential scope names service {m['service']!r}, not 'bedrock'", details
    if cfg.region is not None and m["region"] != cfg.region:
        return False, f"credential scope names region {m['region']!r}, expected {cfg.region!r}", details

    amz_date = handler.headers.get("X-Amz-Date")
    if amz_date is None:
        return False, "no X-Amz-Date header", details
    try:
        when = _dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return False, "malformed X-Amz-Date", details
    if amz_date[:8] != m["date"]:
        return False, "credential scope date differs from X-Amz-Date", details
    if abs(_dt.datetime.now(_dt.timezone.utc) - when) > MAX_CLOCK_SKEW:
        return False, "signature expired (clock skew over 15 minutes)", details

    signed = m["signed"].split(";")
    if signed != sorted(signed) or len(set(signed)) != len(signed):
        return False, "SignedHeaders not sorted and unique", details
    for required in ("host", "x-amz-date"):
        if required not in signed:
            return False, f"{required} is not signed", details
    token = handler.headers.get("X-Amz-Security-Token")
    if cfg.session_token is not None and token != cfg.session_token:
        return False, "missing or wrong X-Amz-Security-Token", details
    if token is not None and "x-amz-security-token" not in signed:
        return False, "X-Amz-Security-Token is not signed", details

    canonical_headers = ""
    for name in signed:
        value = _header_value(handler, name)
        if value is None:
            return False, f"signed header {name} is absent", details
        canonical_headers += f"{name}:{value}\n"

    payload_hash = _sha256_hex(body)
    declared = handler.headers.get("X-Amz-Content-Sha256")
    if declared is not None and declared != payload_hash:
        return False, "X-Amz-Content-Sha256 does not match the body", details

    canonical_request = "\n".join([
        handler.command,
        canonical_uri(raw_path),
        canonical_query(raw_query),
        canonical_headers,
        m["signed"],
        payload_hash,
    ])
    expected = sigv4_signature(cfg.secret_key, amz_date, m["region"], m["service"], canonical_request)
    details["canonical_uri"] = canonical_uri(raw_path)
    if not hmac.compare_digest(expected, m["signature"]):
        return False, "signature mismatch", details
    return True, "", details


# --------------------------------------------------------------------------- models


def word_count(text: str) -> int:
    return len(text.split())


def titan_embedding(text: str, dimensions: int, normalize: bool) -> list[float]:
    """Deterministic bag-of-words hashing embedding: texts that share words are close
    (cosine), so retrieval tests get meaningful neighbours."""
    vec = [0.0] * dimensions
    words = [w.lower() for w in WORD_RE.findall(text)] or [text]
    for word in words:
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        for k in range(2):  # two hashed features per word soften collisions
            idx = int.from_bytes(digest[4 * k:4 * k + 4], "big") % dimensions
            sign = 1.0 if digest[8 + k] & 1 else -1.0
            vec[idx] += sign
    norm = math.sqrt(sum(v * v for v in vec))
    if normalize and norm > 0:
        vec = [v / norm for v in vec]
    return [round(v, 7) for v in vec]


class Config:
    def __init__(self, args: argparse.Namespace, script: dict):
        self.access_key: str = args.access_key
        self.secret_key: str = args.secret_key
        self.session_token: str | None = args.session_token
        self.region: str | None = args.region
        self.converse: list[dict] = list(script.get("converse", []))
        self.used = [False] * len(self.converse)
        self.throttle_left: int = int(script.get("throttle", 0))
        models = script.get("models")
        known = set(models) if models is not None else set(KNOWN_MODELS)
        known.update(e["model"] for e in self.converse if isinstance(e.get("model"), str))
        self.models = known
        self.lock = threading.Lock()
        self.log: list[dict] = []


def validate_script(script: object) -> dict:
    if not isinstance(script, dict):
        raise SystemExit("script: a JSON object expected")
    unknown = set(script) - {"converse", "throttle", "models"}
    if unknown:
        raise SystemExit(f"script: unknown keys {sorted(unknown)}")
    entries = script.get("converse", [])
    if not isinstance(entries, list):
        raise SystemExit("script: 'converse' must be a list")
    allowed = {"match", "reply", "model", "stop_reason", "usage", "latency_ms", "delay_ms"}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("reply"), str):
            raise SystemExit(f"script: converse[{i}] needs a string 'reply'")
        if set(e) - allowed:
            raise SystemExit(f"script: converse[{i}] has unknown keys {sorted(set(e) - allowed)}")
    if not isinstance(script.get("throttle", 0), int):
        raise SystemExit("script: 'throttle' must be an integer")
    return script


def _texts(blocks: object, where: str) -> list[str]:
    if not isinstance(blocks, list) or not blocks:
        raise ApiError(400, "ValidationException", f"{where}: at least one content block is required")
    out = []
    for block in blocks:
        if not isinstance(block, dict) or len(block) != 1:
            raise ApiError(400, "ValidationException", f"{where}: a content block has exactly one member")
        if "text" in block:
            if not isinstance(block["text"], str):
                raise ApiError(400, "ValidationException", f"{where}: text must be a string")
            out.append(block["text"])
    return out


def converse(cfg: Config, model_id: str, body: dict) -> dict:
    unknown = set(body) - {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                           "additionalModelRequestFields", "additionalModelResponseFieldPaths",
                           "promptVariables", "requestMetadata", "performanceConfig"}
    if unknown:
        raise ApiError(400, "ValidationException", f"unknown members: {sorted(unknown)}")
    if model_id == TITAN_V2:
        raise ApiError(400, "ValidationException", "This action doesn't support the model that you provided. "
                       "Try again with a supported text or chat model.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "ValidationException", "messages: at least one message is required")
    user_texts: list[str] = []
    all_texts: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise ApiError(400, "ValidationException", f"messages[{i}].role must be user or assistant")
        texts = _texts(msg.get("content"), f"messages[{i}].content")
        all_texts += texts
        if msg["role"] == "user":
            user_texts += texts
    if messages[-1].get("role") != "user":
        raise ApiError(400, "ValidationException", "the conversation must end with a user message")
    system = body.get("system", [])
    if not isinstance(system, list):
        raise ApiError(400, "ValidationException", "system must be a list")
    for block in system:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            all_texts.append(block["text"])
    inference = body.get("inferenceConfig", {})
    if not isinstance(inference, dict):
        raise ApiError(400, "ValidationException", "inferenceConfig must be an object")
    max_tokens = inference.get("maxTokens", 4096)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ApiError(400, "ValidationException", "inferenceConfig.maxTokens must be at least 1")
    temperature = inference.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 1.0:
        raise ApiError(400, "ValidationException", "inferenceConfig.temperature must be within [0, 1]")

    user_text = "\n".join(user_texts)
    entry: dict | None = None
    with cfg.lock:
        for i, e in enumerate(cfg.converse):
            if cfg.used[i]:
                continue
            if "model" in e and e["model"] != model_id:
                continue
            if "match" in e and e["match"] not in user_text:
                continue
            cfg.used[i] = True
            entry = e
            break
    started = time.monotonic()
    if entry is not None and entry.get("delay_ms"):
        time.sleep(entry["delay_ms"] / 1000.0)
    reply = entry["reply"] if entry is not None else NOT_FOUND_REPLY
    stop_reason = (entry or {}).get("stop_reason", "end_turn")
    words = reply.split()
    if len(words) > max_tokens:  # one word = one token in this stand-in
        reply = " ".join(words[:max_tokens])
        stop_reason = "max_tokens"
    usage = dict((entry or {}).get("usage", {}))
    usage.setdefault("inputTokens", sum(word_count(t) for t in all_texts))
    usage.setdefault("outputTokens", word_count(reply))
    usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
    latency = (entry or {}).get("latency_ms", int((time.monotonic() - started) * 1000) + 1)
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": reply}]}},
        "stopReason": stop_reason,
        "usage": usage,
        "metrics": {"latencyMs": latency},
    }


def invoke(model_id: str, content_type: str | None, body: dict) -> dict:
    if model_id != TITAN_V2:
        raise ApiError(400, "ValidationException",
                       f"this stand-in serves InvokeModel only for {TITAN_V2}")
    if content_type is None or content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(400, "ValidationException", "Malformed input request: content type must be application/json")
    extraneous = set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}
    if extraneous:
        raise ApiError(400, "ValidationException",
                       f"Malformed input request: extraneous key [{sorted(extraneous)[0]}] is not permitted, please reformat your input and try again.")
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise ApiError(400, "ValidationException", "Malformed input request: inputText must be a non-empty string")
    dimensions = body.get("dimensions", 1024)
    if dimensions not in TITAN_DIMENSIONS or isinstance(dimensions, bool):
        raise ApiError(400, "ValidationException",
                       "Malformed input request: dimensions must be one of 256, 512, 1024")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ApiError(400, "ValidationException", "Malformed input request: normalize must be a boolean")
    embedding = titan_embedding(text, dimensions, normalize)
    return {"embedding": embedding, "embeddingsByType": {"float": embedding},
            "inputTextTokenCount": word_count(text)}


# --------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BedrockStandin/1"
    cfg: Config  # set on the class by main()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # quiet: tests read /_standin/log instead

    def _send(self, status: int, payload: object, error_type: str | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_type is not None:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:  # noqa: N802
        if urllib.parse.urlsplit(self.path).path == "/_standin/log":
            with self.cfg.lock:
                log = list(self.cfg.log)
            self._send(200, log)
        else:
            self._send(404, {"message": "not found"}, "UnknownOperationException")

    def do_POST(self) -> None:  # noqa: N802
        body = self._read_body()
        split = urllib.parse.urlsplit(self.path)
        raw_path, raw_query = split.path, split.query
        parts = raw_path.split("/")
        if len(parts) != 4 or parts[0] != "" or parts[1] != "model" or parts[3] not in ("converse", "invoke"):
            self._send(404, {"message": "not found"}, "UnknownOperationException")
            return
        operation = parts[3]
        model_id = urllib.parse.unquote(parts[2])
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        ok, reason, details = verify_sigv4(self, raw_path, raw_query, body, self.cfg)
        entry = {
            "path": raw_path,
            "operation": operation,
            "model_id": model_id,
            "signed_ok": ok,
            "signature_problem": reason or None,
            "authorization_present": self.headers.get("Authorization") is not None,
            "region": details.get("region"),
            "signed_headers": details.get("signed_headers"),
            "body": parsed,
            "status": None,
        }
        try:
            if not ok:
                if reason == "unknown access key id":
                    raise ApiError(403, "UnrecognizedClientException",
                                   "The security token included in the request is invalid.")
                if reason.startswith("signature expired"):
                    raise ApiError(403, "InvalidSignatureException", "Signature expired.")
                raise ApiError(403, "InvalidSignatureException", SIGNATURE_MISMATCH)
            with self.cfg.lock:
                throttled = self.cfg.throttle_left > 0
                if throttled:
                    self.cfg.throttle_left -= 1
            if throttled:
                raise ApiError(429, "ThrottlingException", "Too many requests, please wait before trying again.")
            if model_id not in self.cfg.models:
                raise ApiError(400, "ValidationException", "The provided model identifier is invalid.")
            if not isinstance(parsed, dict):
                raise ApiError(400, "ValidationException", "Malformed input request: the body is not a JSON object")
            if operation == "converse":
                response = converse(self.cfg, model_id, parsed)
            else:
                response = invoke(model_id, self.headers.get("Content-Type"), parsed)
            entry["status"] = 200
            self._log(entry)
            self._send(200, response)
        except ApiError as e:
            entry["status"] = e.status
            entry["error_type"] = e.error_type
            self._log(entry)
            self._send(e.status, {"message": e.message}, e.error_type)

    def _log(self, entry: dict) -> None:
        with self.cfg.lock:
            self.cfg.log.append(entry)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (its timeout) closes the connection under a slow reply.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--script", help="path of the script JSON")
    ap.add_argument("--script-json", help="the script JSON itself")
    ap.add_argument("--access-key", default="AKIDTEST")
    ap.add_argument("--secret-key", default="test-secret")
    ap.add_argument("--session-token", help="when given, requests must carry it (signed)")
    ap.add_argument("--region", help="when given, the credential scope must name it")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ignore-stdin", action="store_true",
                    help="do not stop when standard input closes (stop with SIGTERM)")
    ap.add_argument("--self-test", action="store_true",
                    help="check the SigV4 verifier against AWS's published examples and exit")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return 0
    if args.script and args.script_json:
        ap.error("give --script or --script-json, not both")
    script: object = {}
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            script = json.load(f)
    elif args.script_json:
        script = json.loads(args.script_json)
    Handler.cfg = Config(args, validate_script(script))

    server = QuietServer(("127.0.0.1", args.port), Handler)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if not args.ignore_stdin:
        def watch_stdin() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"READY http://127.0.0.1:{server.server_address[1]}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
