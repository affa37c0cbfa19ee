#!/usr/bin/env python3
"""Send HL7 v2 files to an MLLP server with a third-party client and report the ACKs.

The client is the PyPI package `hl7` (python-hl7, developed with hl7==0.4.5),
which nobody on the Hearth project wrote: its asyncio MLLP client
`hl7.mllp.open_hl7_connection` opens the connection, its `HL7StreamWriter`
frames and writes, its `HL7StreamReader` reads the reply frame, and `hl7.parse`
parses the ACK.

    pip install hl7==0.4.5
    python mllp_send.py --host 127.0.0.1 --port P \
        [--tls-ca CA.pem --tls-cert C.pem --tls-key K.pem] [--tls-server-name NAME] \
        [--timeout 10] FILE [FILE...]

For each file, in order, on one connection: read its bytes, send them, wait
for the reply, print one JSON line:

    {"file": ..., "ack_code": MSA-1, "control_id": MSA-2, "ack_msh10": ...,
     "ack_msh9": ..., "err": [ERR segments as text], "raw": full ACK text,
     "conn": connection number, "sent_bytes": n, "sent_sha256": hex}

On a timeout, a closed connection, a reply that is not an MLLP frame, or a
connection that cannot be opened, it prints {"file": ..., "error": "...",
"conn": ...}, drops the connection and goes on with the next file on a new
one. A reply that arrives but cannot be parsed as HL7 keeps its "raw" text and
gets "parse_error". The exit status is 0 whenever the arguments were valid.

How the exact bytes are sent
----------------------------
`HL7StreamWriter.writemessage(msg)` does `writeblock(str(msg).encode(
writer.encoding))`, with `writer.encoding` "ascii" unless the connection was
opened with `encoding=...`. So:

  * with the default encoding, any non-ASCII file (the UTF-8 ones with
    "Ñúñez", the Latin-1 one, the BOM one) raises UnicodeEncodeError;
  * passing an `hl7.Message` (from `hl7.parse`) re-serialises it: segments
    are re-joined with CR and a CR is appended, so the LF and CRLF variants
    would be rewritten (LF-only text is not even split into segments), and
    the BOM and the bytes between fields are whatever the parser kept.

(Opening the connection with `encoding="latin-1"` and passing
`data.decode("latin-1")` to `writemessage` would also be byte-exact, since
Latin-1 maps every byte to one character and back; `writeblock` says the
same thing without the detour.) `writemessage` is therefore not used. The driver calls the same writer's
`writeblock(data)` (public, inherited from `hl7.mllp.MLLPStreamWriter`), which
writes 0x0B + data + 0x1C 0x0D with `data` untouched. That sends every file
byte for byte through the library, including BOM, LF, CRLF, Latin-1, the
5,000-Z-segment file and the non-HL7 file. No file needs the hand-written
asyncio fallback; the only thing no MLLP client can carry is a payload
containing 0x0B or 0x1C 0x0D, and for such a file the output gets a
"warning" (it is still sent as is, and the server sees broken framing).

Replies are read with `readblock()` (bytes, no decoding), not `readmessage()`
(which decodes as ASCII by default and fails on a non-ASCII ACK). The reply
is decoded as UTF-8 (a leading BOM dropped), falling back to ISO-8859-1, and
parsed with `hl7.parse` after LF/CRLF segment ends are turned into CR.
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys

try:
    import hl7
    from hl7.mllp import InvalidBlockError, open_hl7_connection
except ImportError:  # pragma: no cover - depends on the environment
    sys.stderr.write("mllp_send.py needs the PyPI package 'hl7' (pip install hl7==0.4.5)\n")
    sys.exit(2)

# Replies larger than this are reported as an error (ACKs are small).
READ_LIMIT = 16 * 1024 * 1024


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def decode_reply(block):
    if block.startswith(b"\xef\xbb\xbf"):
        block = block[3:]
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        return block.decode("iso-8859-1")


def parse_ack(text):
    """Fields of an ACK, via hl7.parse. Raises on anything that is not HL7."""
    normalised = text.replace("\r\n", "\r").replace("\n", "\r")
    msg = hl7.parse(normalised)
    msh = msg.segment("MSH")
    out = {
        "ack_code": None,
        "control_id": None,
        "ack_msh10": str(msh(10)),
        "ack_msh9": str(msh(9)),
        "err": [],
    }
    try:
        msa = msg.segment("MSA")
    except KeyError:
        msa = None
    if msa is not None:
        out["ack_code"] = str(msa(1))
        out["control_id"] = str(msa(2))
    try:
        out["err"] = [str(s) for s in msg.segments("ERR")]
    except KeyError:
        pass
    return out


def ssl_context(args):
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    if args.tls_cert:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    return ctx


class Connection:
    def __init__(self, reader, writer, number):
        self.reader = reader
        self.writer = writer
        self.number = number

    async def close(self):
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass


async def connect(args, ctx, number):
    kwargs = {"limit": READ_LIMIT}
    if ctx is not None:
        kwargs["ssl"] = ctx
        kwargs["server_hostname"] = args.tls_server_name or args.host
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(args.host, args.port, **kwargs), args.timeout)
    return Connection(reader, writer, number)


def describe(exc, timeout):
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout: no complete reply within %gs" % timeout
    if isinstance(exc, asyncio.IncompleteReadError):
        if exc.partial:
            return "connection closed by peer inside a reply (%d bytes received: %r)" % (
                len(exc.partial), exc.partial[:200])
        return "connection closed by peer before any reply"
    if isinstance(exc, InvalidBlockError):
        return "reply is not an MLLP frame: %s" % exc
    # Before ValueError: ssl.SSLCertVerificationError is also a ValueError.
    if isinstance(exc, ssl.SSLError):
        return "tls: %s" % exc
    if isinstance(exc, ValueError):
        return "reply over %d bytes: %s" % (READ_LIMIT, exc)
    if isinstance(exc, OSError):
        return "%s: %s" % (type(exc).__name__, exc)
    return "%s: %s" % (type(exc).__name__, exc)


async def run(args):
    ctx = ssl_context(args)
    conn = None
    conns_opened = 0
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            emit({"file": path, "error": "cannot read file: %s" % exc})
            continue
        record = {"file": path}
        if b"\x0b" in data or b"\x1c\x0d" in data:
            record["warning"] = "payload contains MLLP framing bytes; the peer will see broken framing"

        if conn is None:
            conns_opened += 1
            try:
                conn = await connect(args, ctx, conns_opened)
            except Exception as exc:  # noqa: BLE001 - reported, then next file
                record.update({"error": "connect: " + describe(exc, args.timeout),
                               "conn": conns_opened})
                emit(record)
                continue

        record["conn"] = conn.number
        try:
            conn.writer.writeblock(data)
            await asyncio.wait_for(conn.writer.drain(), args.timeout)
            block = await asyncio.wait_for(conn.reader.readblock(), args.timeout)
        except Exception as exc:  # noqa: BLE001 - reported, then a new connection
            record["error"] = describe(exc, args.timeout)
            record["sent_bytes"] = len(data)
            emit(record)
            await conn.close()
            conn = None
            continue

        raw = decode_reply(block)
        try:
            record.update(parse_ack(raw))
        except Exception as exc:  # noqa: BLE001 - not HL7: keep the raw reply
            record.update({"ack_code": None, "control_id": None, "ack_msh10": None,
                           "ack_msh9": None, "err": [],
                           "parse_error": "%s: %s" % (type(exc).__name__, exc)})
        record["raw"] = raw
        record["sent_bytes"] = len(data)
        record["sent_sha256"] = hashlib.sha256(data).hexdigest()
        emit(record)

    if conn is not None:
        await conn.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--tls-ca", help="CA bundle (PEM) to verify the server")
    p.add_argument("--tls-cert", help="client certificate (PEM)")
    p.add_argument("--tls-key", help="client private key (PEM)")
    p.add_argument("--tls-server-name",
                   help="name to verify in the server certificate (default: --host)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to connect, and to wait for each ACK (default 10)")
    p.add_argument("files", nargs="+", metavar="FILE")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
