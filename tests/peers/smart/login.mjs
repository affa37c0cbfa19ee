// Drives the authorization_code + PKCE (S256) flow against idp.mjs the way a browser
// would: fetch with redirect: 'manual' and a small cookie jar. Prints the token
// response JSON as one line on stdout.
//
//   node login.mjs --issuer URL --client-id ID --client-secret S --redirect-uri URI \
//     --scope "openid fhirUser patient/*.rs" [--resource URL] --login alice \
//     [--auth-method client_secret_basic|client_secret_post] [--password X] [--launch V]
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const fail = (msg) => {
  console.error(`login.mjs: ${msg}`);
  process.exit(1);
};

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'client-id': { type: 'string' },
      'client-secret': { type: 'string' },
      'redirect-uri': { type: 'string' },
      scope: { type: 'string' },
      resource: { type: 'string' },
      login: { type: 'string' },
      password: { type: 'string', default: 'any-password' },
      'auth-method': { type: 'string', default: 'client_secret_basic' },
      launch: { type: 'string' },
    },
  }));
} catch (err) {
  fail(err.message);
}
for (const required of ['issuer', 'client-id', 'redirect-uri', 'scope', 'login']) {
  if (!args[required]) fail(`--${required} is required`);
}
if (!['client_secret_basic', 'client_secret_post', 'none'].includes(args['auth-method'])) {
  fail(`unsupported --auth-method ${args['auth-method']}`);
}

// Cookie jar: name+path → value; honours Path and deletion, ignores Domain (one host).
const jar = new Map();
function storeCookies(response, url) {
  for (const header of response.headers.getSetCookie()) {
    const [pair, ...attrs] = header.split(';').map((s) => s.trim());
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
    let expired = value === '';
    for (const attr of attrs) {
      const [key, val = ''] = attr.split('=');
      const k = key.toLowerCase();
      if (k === 'path') path = val || '/';
      if (k === 'max-age' && Number(val) <= 0) expired = true;
      if (k === 'expires' && Date.parse(val) <= Date.now()) expired = true;
    }
    const id = `${name}\u0000${path}`;
    if (expired) jar.delete(id);
    else jar.set(id, { name, value, path });
  }
}
function cookieHeader(url) {
  const matches = [...jar.values()].filter(
    ({ path }) => url.pathname === path || url.pathname.startsWith(path.endsWith('/') ? path : `${path}/`),
  );
  return matches.map(({ name, value }) => `${name}=${value}`).join('; ');
}

async function request(url, init = {}) {
  const target = new URL(url);
  const headers = { ...init.headers };
  const cookies = cookieHeader(target);
  if (cookies) headers.cookie = cookies;
  let response;
  try {
    response = await fetch(target, { ...init, headers, redirect: 'manual' });
  } catch (err) {
    fail(`${init.method ?? 'GET'} ${target} failed: ${err.cause?.message ?? err.message}`);
  }
  storeCookies(response, target);
  return response;
}

async function describe(response) {
  const body = await response.text().catch(() => '');
  return `HTTP ${response.status}${body ? `: ${body.slice(0, 500)}` : ''}`;
}

const issuer = args.issuer.replace(/\/$/, '');
const discoveryResponse = await request(`${issuer}/.well-known/openid-configuration`);
if (discoveryResponse.status !== 200) fail(`discovery: ${await describe(discoveryResponse)}`);
const discovery = await discoveryResponse.json();

// Authorization request with PKCE S256.
const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('base64url');
const state = randomBytes(12).toString('base64url');
const nonce = randomBytes(12).toString('base64url');
const authorize = new URL(discovery.authorization_endpoint);
const params = {
  response_type: 'code',
  client_id: args['client-id'],
  redirect_uri: args['redirect-uri'],
  scope: args.scope,
  state,
  nonce,
  code_challenge: challenge,
  code_challenge_method: 'S256',
  ...(args.resource ? { resource: args.resource, aud: args.resource } : {}),
  ...(args.launch ? { launch: args.launch } : {}),
};
for (const [k, v] of Object.entries(params)) authorize.searchParams.set(k, v);

// Follow redirects; submit the dev login form once; stop at the redirect_uri.
let next = authorize.href;
let method = 'GET';
let body;
let loggedIn = false;
let callback;
for (let hop = 0; hop < 20 && !callback; hop += 1) {
  const response = await request(next, {
    method,
    body,
    headers: body ? { 'content-type': 'application/x-www-form-urlencoded' } : {},
  });
  method = 'GET';
  body = undefined;
  if ([301, 302, 303, 307, 308].includes(response.status)) {
    const location = new URL(response.headers.get('location'), next);
    if (location.href.startsWith(args['redirect-uri'])) {
      callback = location;
    } else {
      next = location.href;
    }
    continue;
  }
  const html = await response.text();
  if (response.status !== 200) fail(`unexpected HTTP ${response.status} at ${next}: ${html.slice(0, 500)}`);
  if (!/name="prompt" value="login"/.test(html)) {
    fail(`expected the login form at ${next} (consent should be auto-granted), got: ${html.slice(0, 500)}`);
  }
  if (loggedIn) fail(`login form shown again after signing in as ${args.login}; unknown account?`);
  const action = html.match(/<form[^>]*action="([^"]+)"/)?.[1]?.replaceAll('&amp;', '&');
  if (!action) fail(`no form action in login page at ${next}`);
  next = new URL(action, next).href;
  method = 'POST';
  body = new URLSearchParams({ prompt: 'login', login: args.login, password: args.password }).toString();
  loggedIn = true;
}
if (!callback) fail('too many redirects without reaching the redirect_uri');
if (callback.searchParams.get('error')) {
  fail(`authorization error: ${callback.searchParams.get('error')}: ${callback.searchParams.get('error_description') ?? ''}`);
}
if (callback.searchParams.get('state') !== state) fail(`state mismatch in ${callback.href}`);
const code = callback.searchParams.get('code');
if (!code) fail(`no code in ${callback.href}`);

// Token request.
const form = new URLSearchParams({
  grant_type: 'authorization_code',
  code,
  redirect_uri: args['redirect-uri'],
  code_verifier: verifier,
});
if (args.resource) form.set('resource', args.resource);
const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
if (args['auth-method'] === 'client_secret_basic') {
  const enc = (s) => encodeURIComponent(s ?? '');
  headers.authorization = `Basic ${Buffer.from(`${enc(args['client-id'])}:${enc(args['client-secret'])}`).toString('base64')}`;
} else {
  form.set('client_id', args['client-id']);
  if (args['auth-method'] === 'client_secret_post') form.set('client_secret', args['client-secret'] ?? '');
}
const tokenResponse = await request(discovery.token_endpoint, { method: 'POST', headers, body: form.toString() });
if (tokenResponse.status !== 200) fail(`token request: ${await describe(tokenResponse)}`);
const tokens = await tokenResponse.json();
if (!tokens.access_token) fail(`token response without access_token: ${JSON.stringify(tokens)}`);
process.stdout.write(`${JSON.stringify(tokens)}\n`);
