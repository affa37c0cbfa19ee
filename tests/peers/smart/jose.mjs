// JOSE helper for Hearth's SMART tests (keys, signed JWTs, deliberately bad JWTs).
//
//   node jose.mjs keygen --alg RS384|ES384|RS256|ES256 --kid KID --out DIR
//   node jose.mjs sign --key DIR/private.jwk.json --claims '<json>' [--alg ALG]
//        [--kid KID | --no-kid] [--typ TYP | --no-typ] [--hmac-secret-file FILE]
//   node jose.mjs pem --jwks FILE_OR_URL [--kid KID]
//
// Claims may use "$now+N" / "$now-N" (unix seconds) and "$uuid" as values.
import { createHmac, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { SignJWT, exportJWK, exportSPKI, generateKeyPair, importJWK } from 'jose';

const fail = (msg) => {
  console.error(`jose.mjs: ${msg}`);
  process.exit(1);
};

const readJson = (file) => {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    return fail(`cannot read JSON from ${file}: ${err.message}`);
  }
};

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function expandClaims(claims) {
  const now = Math.floor(Date.now() / 1000);
  return Object.fromEntries(Object.entries(claims).map(([name, value]) => {
    if (value === '$uuid') return [name, randomUUID()];
    const rel = typeof value === 'string' && value.match(/^\$now(?:([+-])(\d+))?$/);
    if (rel) return [name, now + (rel[1] === '-' ? -1 : 1) * Number(rel[2] ?? 0)];
    return [name, value];
  }));
}

async function keygen(opts) {
  const { alg, kid, out } = opts;
  if (!['RS256', 'RS384', 'ES256', 'ES384'].includes(alg)) fail(`keygen: unsupported --alg ${alg}`);
  if (!kid || !out) fail('keygen: --kid and --out are required');
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  mkdirSync(out, { recursive: true });
  const priv = { ...(await exportJWK(privateKey)), kid, alg };
  const pub = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  writeFileSync(join(out, 'private.jwk.json'), `${JSON.stringify(priv, null, 2)}\n`, { mode: 0o600 });
  writeFileSync(join(out, 'jwks.json'), `${JSON.stringify({ keys: [pub] }, null, 2)}\n`);
}

async function sign(opts) {
  if (!opts.claims) fail('sign: --claims is required');
  let claims;
  try {
    claims = expandClaims(JSON.parse(opts.claims));
  } catch (err) {
    fail(`sign: --claims is not JSON: ${err.message}`);
  }
  const jwk = opts.key ? readJson(opts.key) : undefined;
  const alg = opts.alg ?? jwk?.alg;
  if (!alg) fail('sign: no --alg and the key has no alg');

  const header = { alg };
  const kid = opts['no-kid'] ? undefined : (opts.kid ?? jwk?.kid);
  if (kid !== undefined) header.kid = kid;
  if (!opts['no-typ']) header.typ = opts.typ ?? 'JWT';

  // Tokens jose will not make: unsigned, and HMAC keyed with arbitrary bytes.
  if (alg === 'none') {
    return `${b64url(header)}.${b64url(claims)}.`;
  }
  if (alg === 'HS256') {
    if (!opts['hmac-secret-file']) fail('sign: --alg HS256 needs --hmac-secret-file');
    const input = `${b64url(header)}.${b64url(claims)}`;
    const mac = createHmac('sha256', readFileSync(opts['hmac-secret-file'])).update(input).digest('base64url');
    return `${input}.${mac}`;
  }

  if (!jwk) fail('sign: --key is required');
  const { alg: _keyAlg, use: _use, key_ops: _ops, ...material } = jwk;
  let key;
  try {
    key = await importJWK(material, alg); // alg may differ from the key's own (RS384 key as RS256)
  } catch (err) {
    fail(`sign: cannot use the key for ${alg}: ${err.message}`);
  }
  return new SignJWT(claims).setProtectedHeader(header).sign(key);
}

async function pem(opts) {
  if (!opts.jwks) fail('pem: --jwks is required');
  let jwks;
  if (/^https?:\/\//.test(opts.jwks)) {
    const response = await fetch(opts.jwks).catch((err) => fail(`pem: GET ${opts.jwks}: ${err.cause?.message ?? err.message}`));
    if (!response.ok) fail(`pem: GET ${opts.jwks}: HTTP ${response.status}`);
    jwks = await response.json();
  } else {
    jwks = readJson(opts.jwks);
  }
  const jwk = opts.kid ? jwks.keys?.find((k) => k.kid === opts.kid) : jwks.keys?.[0];
  if (!jwk) fail(`pem: no key${opts.kid ? ` with kid ${opts.kid}` : ''} in ${opts.jwks}`);
  const alg = jwk.alg ?? (jwk.kty === 'EC' ? { 'P-256': 'ES256', 'P-384': 'ES384' }[jwk.crv] : 'RS256');
  const key = await importJWK({ ...jwk, ext: true }, alg);
  return (await exportSPKI(key)).trimEnd();
}

const commands = { keygen, sign, pem };
const [command, ...rest] = process.argv.slice(2);
if (!commands[command]) fail('usage: node jose.mjs keygen|sign|pem [options] (see the file header)');
let opts;
try {
  ({ values: opts } = parseArgs({
    args: rest,
    options: {
      alg: { type: 'string' },
      kid: { type: 'string' },
      out: { type: 'string' },
      key: { type: 'string' },
      claims: { type: 'string' },
      typ: { type: 'string' },
      'no-kid': { type: 'boolean' },
      'no-typ': { type: 'boolean' },
      'hmac-secret-file': { type: 'string' },
      jwks: { type: 'string' },
    },
  }));
} catch (err) {
  fail(err.message);
}
const output = await commands[command](opts);
if (output !== undefined) process.stdout.write(`${output}\n`);
