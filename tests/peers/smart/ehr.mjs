// A SMART on FHIR "EHR" for Hearth's EHR-launch tests: an authorization server
// (oidc-provider) plus a FHIR API that checks the EHR's own access tokens and proxies
// to a real FHIR server (a Hearth tenant) with a token of its own. It plays Epic or
// Oracle Health: Hearth is the SMART app it launches.
//
//   node tests/peers/smart/ehr.mjs <config.json>
//
// Prints `READY {"issuer":…,"fhir_base":…}` on stdout once listening on 127.0.0.1,
// then runs until SIGTERM/SIGINT or until its stdin closes. Nothing else goes to
// stdout. See README.md for the config format, the routes and the faults.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

import { CompactSign, exportJWK, generateKeyPair, jwtVerify } from 'jose';

// oidc-provider prints notices with console.info (stdout); keep stdout for READY only,
// and drop its start-up warnings about the development features used on purpose here.
const EXPECTED_WARNINGS = [
  'Unsupported runtime', 'in-memory adapter', 'devInteractions is enabled', 'already parsed request body',
];
console.info = console.log = (...args) => console.error(...args);
const warn = console.warn.bind(console);
console.warn = (...args) => {
  if (!EXPECTED_WARNINGS.some((w) => String(args[0]).includes(w))) warn(...args);
};

const { default: Provider, errors } = await import('oidc-provider');

const die = (msg) => {
  console.error(`ehr.mjs: ${msg}`);
  process.exit(2);
};

if (process.argv.length !== 3) die('usage: node ehr.mjs <config.json>');
let config;
try {
  config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  die(`cannot read config ${process.argv[2]}: ${err.message}`);
}

const SUPPORTED_ALGS = ['RS256', 'RS384', 'ES256', 'ES384'];
const signingAlg = config.signing_alg ?? 'RS256';
if (!SUPPORTED_ALGS.includes(signingAlg)) die(`unsupported signing_alg ${signingAlg}`);

if (typeof config.upstream_fhir !== 'string' || !/^https?:\/\//.test(config.upstream_fhir)) {
  die('config.upstream_fhir must be the http(s) base URL of the FHIR server to proxy to');
}
// Compared and replaced as a plain string, so without a trailing slash.
const upstreamBase = config.upstream_fhir.replace(/\/+$/, '');
const upstreamToken = config.upstream_token;
const accessTokenTtl = config.access_token_ttl ?? 3600;
for (const [id, launch] of Object.entries(config.launches ?? {})) {
  if (!Object.hasOwn(config.accounts ?? {}, launch.user ?? '')) die(`launches.${id}.user must name an account`);
}

// Faults can be replaced at run time (POST /_peer/faults); the 429/503 counts are
// consumed by FHIR requests, so they live in their own counters.
let faults;
const pending = { fhir_429: 0, fhir_503: 0 };
function setFaults(next) {
  faults = next ?? {};
  pending.fhir_429 = Number(faults.fhir_429 ?? 0);
  pending.fhir_503 = Number(faults.fhir_503 ?? 0);
}
setFaults(config.faults);

// Algorithms a confidential client may sign its private_key_jwt assertion with.
const CLIENT_AUTH_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];
const CLIENT_AUTH_METHODS = ['none', 'private_key_jwt', 'client_secret_basic', 'client_secret_post'];

const clients = (config.clients ?? []).map((metadata) => ({ id_token_signed_response_alg: signingAlg, ...metadata }));
if (!clients.length) die('config.clients must list at least one client');

// Every scope any client may ask for; the FHIR API accepts all of them.
const resourceScopes = [...new Set(clients.flatMap((c) => (c.scope ?? '').split(' ')).filter(Boolean))];

// The provider's signing key, fresh for every run. The FHIR API verifies access
// tokens with its public half, the way a resource server separate from the
// authorization server would.
const { privateKey, publicKey } = await generateKeyPair(signingAlg, { extractable: true });
const signingJwk = {
  ...(await exportJWK(privateKey)),
  kid: `ehr-${signingAlg.toLowerCase()}-${randomBytes(4).toString('hex')}`,
  use: 'sig',
  alg: signingAlg,
};

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
const fhirBase = `${issuer}/fhir`;

// The port is known only now, so strings in accounts and launches may say {issuer}
// or {fhir_base} (an absolute fhirUser like Epic's, this EHR's own style.json).
const expand = (value) => JSON.parse(
  JSON.stringify(value ?? {}).replaceAll('{fhir_base}', fhirBase).replaceAll('{issuer}', issuer),
);
const accounts = expand(config.accounts);
const launches = expand(config.launches);
const standalonePatient = expand(config.standalone_patient);

// Test hooks: everything the peer saw, served at GET /_peer/log.
const peerLog = { authorize: [], token: [], fhir: [] };

// SMART launch context, tied to what carries it: an authorization code (by jti)
// until it is exchanged, then the refresh token(s) issued from it. Never global, so
// concurrent launches keep their own patient.
const CONTEXT_FIELDS = ['patient', 'encounter', 'need_patient_banner', 'smart_style_url', 'fhirContext', 'tenant'];
const codeContexts = new Map();
const refreshContexts = new Map();

function launchContext(params, accountId) {
  if (params.launch !== undefined) {
    const launch = launches[params.launch] ?? {};
    return Object.fromEntries(CONTEXT_FIELDS.filter((f) => launch[f] !== undefined).map((f) => [f, launch[f]]));
  }
  // Standalone launch: the patient the user "picked" (fixed per account here).
  const scopes = (params.scope ?? '').split(' ');
  if (scopes.includes('launch/patient') && standalonePatient[accountId] !== undefined) {
    return { patient: standalonePatient[accountId] };
  }
  return {};
}

// The context for the grant source of the token request being served.
function contextOf(ctx) {
  const { AuthorizationCode: code, RotatedRefreshToken: rotated, RefreshToken: refresh } = ctx.oidc?.entities ?? {};
  if (code && codeContexts.has(code.jti)) return codeContexts.get(code.jti);
  for (const token of [rotated, refresh]) {
    if (token && refreshContexts.has(token.jti)) return refreshContexts.get(token.jti);
  }
  return undefined;
}

// oidc-provider's fetch refuses loopback and private addresses (SSRF protection).
// The confidential client's jwks_uri is Hearth on 127.0.0.1, so let loopback through.
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const fetchForProvider = (url, options) => {
  const target = new URL(url);
  if (LOOPBACK_HOSTS.has(target.hostname)) {
    const { dispatcher: _ignored, ...rest } = options;
    return globalThis.fetch(url, rest);
  }
  return globalThis.fetch(url, options);
};

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  clientDefaults: { id_token_signed_response_alg: signingAlg },
  clientAuthMethods: CLIENT_AUTH_METHODS,
  scopes: ['openid', 'offline_access', ...resourceScopes],
  // SMART's own authorization parameters; the validators run on /auth only and make
  // the request fail with invalid_request (an error redirect to the client).
  extraParams: {
    aud: async (_ctx, value) => {
      if (value === undefined) throw new errors.InvalidRequest(`aud is required (this EHR's FHIR base is ${fhirBase})`);
      if (value !== fhirBase) throw new errors.InvalidRequest(`aud ${value} is not this EHR's FHIR base ${fhirBase}`);
    },
    launch: async (ctx, value) => {
      if (value === undefined) return;
      if (!Object.hasOwn(launches, value)) throw new errors.InvalidRequest(`unknown launch ${value}`);
      // The EHR user who launched the app is the one signed in. If this browser's
      // session belongs to someone else, sign them out first; otherwise oidc-provider
      // would stop at its "log out the other user?" page when the interaction resumes.
      const { session } = ctx.oidc;
      if (ctx.oidc.route === 'authorization' && session?.accountId && session.accountId !== launches[value].user) {
        delete session.accountId;
        delete session.loginTs;
        delete session.authorizations;
        session.touched = true;
      }
    },
  },
  enabledJWA: {
    idTokenSigningAlgValues: [signingAlg],
    userinfoSigningAlgValues: [signingAlg],
    introspectionSigningAlgValues: [signingAlg],
    authorizationSigningAlgValues: [signingAlg],
    clientAuthSigningAlgValues: CLIENT_AUTH_ALGS,
  },
  // `fhirUser` (and `profile`) are OIDC scopes: their claims go to the ID token.
  claims: {
    openid: ['sub'],
    fhirUser: ['fhirUser'],
    profile: ['name', 'given_name', 'family_name'],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  fetch: fetchForProvider,
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    // SMART apps name the FHIR server with `aud`, not `resource`: every token is for
    // the one FHIR base, as a JWT the FHIR API can check on its own.
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => fhirBase,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== fhirBase) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        return {
          scope: resourceScopes.join(' '),
          audience: fhirBase,
          accessTokenFormat: 'jwt',
          accessTokenTTL: accessTokenTtl,
          jwt: { sign: { alg: signingAlg } },
        };
      },
    },
  },
  // Consent is implied: the grant covers whatever the client asked for.
  loadExistingGrant: async (ctx) => {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    const grant = (grantId && await oidc.provider.Grant.find(grantId))
      || new oidc.provider.Grant({ accountId: oidc.account.accountId, clientId: oidc.client.clientId });
    const oidcScopes = [...oidc.requestParamOIDCScopes].join(' ');
    if (oidcScopes) grant.addOIDCScope(oidcScopes);
    if (oidc.requestParamClaims.size) grant.addOIDCClaims([...oidc.requestParamClaims]);
    for (const [indicator, resourceServer] of Object.entries(oidc.resourceServers)) {
      const granted = [...oidc.requestParamScopes].filter((s) => resourceServer.scopes.has(s)).join(' ');
      if (granted) grant.addResourceScope(indicator, granted);
    }
    await grant.save();
    return grant;
  },
  findAccount: async (_ctx, sub) => {
    const claims = accounts[sub];
    if (!claims) return undefined;
    return { accountId: sub, claims: async () => ({ ...claims, sub }) };
  },
  // Access tokens carry the user and the launch's patient/encounter, so the FHIR API
  // can confine a patient-context token without a lookup.
  extraTokenClaims: async (ctx, token) => {
    const extra = {};
    const fhirUser = token.accountId ? accounts[token.accountId]?.fhirUser : undefined;
    if (fhirUser !== undefined) extra.fhirUser = fhirUser;
    const context = contextOf(ctx);
    for (const name of ['patient', 'encounter']) {
      if (context?.[name] !== undefined) extra[name] = context[name];
    }
    return extra;
  },
  // Rotate refresh tokens, except when imitating Oracle Health, which keeps the old one
  // and leaves `refresh_token` out of the refresh response.
  rotateRefreshToken: () => !faults.refresh_without_refresh_token,
  ttl: {
    AccessToken: accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 8 * 3600,
    Grant: 24 * 3600,
    RefreshToken: 24 * 3600,
  },
  clientBasedCORS: () => true,
  renderError: (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});

const readBody = async (stream) => {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
};

// Who authenticated at the token endpoint and how (no secrets in the log).
function clientAuthOf(req, form) {
  if (/^basic /i.test(req.headers.authorization ?? '')) return 'client_secret_basic';
  if (form.client_assertion !== undefined) {
    try {
      const header = JSON.parse(Buffer.from(form.client_assertion.split('.')[0], 'base64url'));
      return String(header.alg).startsWith('HS') ? 'client_secret_jwt' : 'private_key_jwt';
    } catch {
      return 'private_key_jwt';
    }
  }
  if (form.client_secret !== undefined) return 'client_secret_post';
  return 'none';
}

const SECRET_TOKEN_PARAMS = ['code', 'code_verifier', 'client_secret', 'client_assertion', 'refresh_token'];

// Test hook: log /auth and /token requests. Reads form bodies here and hands the raw
// string on as req.body, which oidc-provider then parses itself.
provider.use(async (ctx, next) => {
  const isAuthorize = ctx.path === '/auth';
  const isToken = ctx.path === '/token' && ctx.method === 'POST';
  const isSubmit = ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path);
  if (!isAuthorize && !isToken && !isSubmit) return next();

  let form = {};
  if (ctx.method === 'POST' && ctx.is('application/x-www-form-urlencoded')) {
    const raw = (await readBody(ctx.req)).toString('utf8');
    form = Object.fromEntries(new URLSearchParams(raw));
    ctx.req.body = raw;
  }
  if (isSubmit) return next();

  if (isAuthorize) {
    const params = ctx.method === 'POST' ? form : Object.fromEntries(new URLSearchParams(ctx.querystring));
    const entry = { method: ctx.method, params: { ...params } };
    peerLog.authorize.push(entry);
    // oidc-provider drops `offline_access` unless prompt=consent was asked for (OIDC
    // Core §11); SMART apps never send it. Add it so refresh tokens are issued; the
    // consent step it causes is granted automatically (see below).
    const scopes = (params.scope ?? '').split(' ');
    const prompts = (params.prompt ?? '').split(' ').filter(Boolean);
    const addConsent = scopes.includes('offline_access') && !prompts.includes('none') && !prompts.includes('consent');
    if (addConsent) params.prompt = [...prompts, 'consent'].join(' ');
    // SMART's authorize-post: oidc-provider only takes POST at /auth with SameSite=None
    // cookies, which browsers drop over plain http. The form carries the same
    // parameters as a query, so serve it as the GET request it is equivalent to.
    // (An untouched GET keeps its query as sent, duplicates and all.)
    if (addConsent || ctx.method === 'POST') {
      ctx.method = 'GET';
      ctx.querystring = new URLSearchParams(params).toString();
      delete ctx.req.body;
    }
    await next();
    entry.status = ctx.status;
    const location = ctx.response.get('location');
    if (location) {
      entry.location = location;
      const error = URL.parse(location, issuer)?.searchParams.get('error');
      if (error) entry.error = error;
    } else if (ctx.body?.error) {
      entry.error = ctx.body.error;
    }
    return undefined;
  }

  const params = Object.fromEntries(Object.entries(form).map(([k, v]) => [k, SECRET_TOKEN_PARAMS.includes(k) ? true : v]));
  const entry = {
    grant_type: form.grant_type,
    client_auth_method: clientAuthOf(ctx.req, form),
    client_id: form.client_id,
    params,
    code_verifier: form.code_verifier !== undefined,
    client_assertion: form.client_assertion !== undefined,
  };
  if (form.client_assertion) {
    try {
      const { alg, kid, typ } = JSON.parse(Buffer.from(form.client_assertion.split('.')[0], 'base64url'));
      entry.client_assertion_header = { alg, kid, typ };
    } catch {
      entry.client_assertion_header = null;
    }
  }
  peerLog.token.push(entry);
  await next();
  entry.status = ctx.status;
  if (ctx.body?.error) entry.error = ctx.body.error;
  if (ctx.oidc?.client) entry.client_id = ctx.oidc.client.clientId;
  return undefined;
});

// The EHR's interactions. An EHR launch has no login page (the user is already signed
// into the EHR): the interaction completes as the launch's user with consent. Any
// consent prompt (also the one forced by prompt=consent above) is granted at once.
// Everything else falls through to devInteractions' login page (standalone launch).
provider.use(async (ctx, next) => {
  if (ctx.method !== 'GET' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch {
    return next(); // let devInteractions report the missing/expired interaction
  }
  const launch = details.params.launch !== undefined ? launches[details.params.launch] : undefined;
  let result;
  if (details.prompt.name === 'login' && launch) {
    result = { login: { accountId: launch.user }, consent: {} };
  } else if (details.prompt.name === 'consent') {
    result = { consent: {} };
  }
  if (!result) return next();
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.redirect(returnTo);
  return undefined;
});

// An unknown login would otherwise crash oidc-provider later (no account, no grant):
// end the interaction with access_denied instead.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'POST' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
  const form = Object.fromEntries(new URLSearchParams(typeof ctx.req.body === 'string' ? ctx.req.body : ''));
  if (form.prompt === 'login' && !Object.hasOwn(accounts, form.login ?? '')) {
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
      error: 'access_denied',
      error_description: `unknown account ${form.login}`,
    }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return undefined;
  }
  return next();
});

// Re-signs a compact JWS with a changed payload (the id_token faults).
async function resign(jws, key, change) {
  const [header, payload] = jws.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url')));
  change(payload);
  return new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader(header).sign(key);
}

// SMART launch context: remember it with each issued code; put it in the token
// response of that code and of every refresh token that descends from it.
provider.use(async (ctx, next) => {
  await next();
  const { oidc } = ctx;
  if (!oidc) return;
  const code = oidc.entities.AuthorizationCode;
  if ((oidc.route === 'authorization' || oidc.route === 'resume') && code) {
    codeContexts.set(code.jti, launchContext(oidc.params, code.accountId));
    return;
  }
  if (oidc.route !== 'token' || ctx.status !== 200 || typeof ctx.body?.access_token !== 'string') return;
  const grantType = oidc.params.grant_type;
  const context = contextOf(ctx) ?? {};
  if (code) codeContexts.delete(code.jti);
  const refresh = oidc.entities.RefreshToken;
  if (refresh && ['authorization_code', 'refresh_token'].includes(grantType)) refreshContexts.set(refresh.jti, context);

  const body = { ...ctx.body };
  for (const field of CONTEXT_FIELDS) {
    if (context[field] !== undefined) body[field] = context[field];
  }
  if (grantType === 'refresh_token' && faults.refresh_without_refresh_token) delete body.refresh_token;
  if (body.id_token && (faults.id_token_aud !== undefined || faults.id_token_foreign_key)) {
    const key = faults.id_token_foreign_key ? (await generateKeyPair(signingAlg)).privateKey : privateKey;
    body.id_token = await resign(body.id_token, key, (payload) => {
      if (faults.id_token_aud !== undefined) payload.aud = faults.id_token_aud;
    });
  }
  ctx.body = body;
});

for (const event of ['server_error', 'grant.error', 'authorization.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (_ctx, err) => {
    console.error(`ehr.mjs ${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
  });
}

// ---------------------------------------------------------------------------------
// The EHR's own routes around the provider.

const send = (res, status, body, headers = {}) => {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    ...headers,
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
};

const outcome = (code, diagnostics) => ({
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'error', code, diagnostics }],
});
const sendOutcome = (res, status, code, diagnostics, headers = {}) => send(
  res, status, outcome(code, diagnostics), { 'content-type': 'application/fhir+json', ...headers },
);
const OUTCOME_CODES = { 401: 'login', 403: 'forbidden', 404: 'not-found', 429: 'throttled', 503: 'transient' };

// The provider's endpoints, as its own discovery document names them.
let discovery;
async function providerDiscovery() {
  if (!discovery) {
    const response = await fetch(`${issuer}/.well-known/openid-configuration`);
    if (response.status !== 200) throw new Error(`discovery answered HTTP ${response.status}`);
    discovery = await response.json();
  }
  return discovery;
}

async function smartConfiguration() {
  const d = await providerDiscovery();
  return {
    issuer,
    jwks_uri: d.jwks_uri,
    authorization_endpoint: d.authorization_endpoint,
    token_endpoint: d.token_endpoint,
    ...(d.revocation_endpoint ? { revocation_endpoint: d.revocation_endpoint } : {}),
    grant_types_supported: ['authorization_code', 'refresh_token'],
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    token_endpoint_auth_signing_alg_values_supported: CLIENT_AUTH_ALGS,
    scopes_supported: [...new Set(['openid', 'fhirUser', 'offline_access', ...resourceScopes])],
    capabilities: [
      'launch-ehr', 'launch-standalone', 'authorize-post',
      'client-public', 'client-confidential-asymmetric',
      'context-ehr-patient', 'context-ehr-encounter', 'context-standalone-patient',
      'context-banner', 'context-style',
      'sso-openid-connect', 'permission-offline', 'permission-patient', 'permission-v1', 'permission-v2',
    ],
  };
}

const STYLE = {
  color_background: '#edeae3',
  color_error: '#9e2d2d',
  color_highlight: '#69b5ce',
  color_modal_backdrop: '',
  color_success: '#498e49',
  color_text: '#303030',
  dim_border_radius: '6px',
  dim_font_size: '13px',
  dim_spacing_size: '20px',
  font_family_body: 'Georgia, Times, \'Times New Roman\', serif',
  font_family_heading: '"HelveticaNeue-Light", Helvetica, Arial, sans-serif',
  font_family_base: 'Georgia, serif',
};

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The EHR's chart with the app embedded, as Epic's and Oracle Health's do.
function chartPage(url) {
  const app = url.searchParams.get('app');
  const launch = url.searchParams.get('launch') ?? '';
  const target = app ? URL.parse(app) : null;
  if (!target) return null;
  target.searchParams.set('iss', fhirBase);
  target.searchParams.set('launch', launch);
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>EHR chart</title></head>
<body>
<h1>EHR chart</h1>
<iframe id="app" src="${escapeHtml(target.href)}" style="width:100%;height:90vh"></iframe>
</body></html>
`;
}

// The FHIR API: the EHR checks its own access token, then answers from the upstream
// FHIR server (with the upstream's token and URLs swapped for its own).
const FORWARDED_REQUEST_HEADERS = [
  'accept', 'content-type', 'prefer', 'if-match', 'if-none-match', 'if-none-exist', 'if-modified-since',
];
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'etag', 'last-modified', 'location', 'content-location'];

async function fhirApi(req, res, url, rest) {
  const started = Date.now();
  const entry = { method: req.method, path: `${url.pathname}${url.search}` };
  peerLog.fhir.push(entry);
  const finish = (status) => {
    entry.status = status;
    entry.ms = Date.now() - started;
  };

  // Like most EHRs, the CapabilityStatement is public.
  const isMetadata = rest === '/metadata' && req.method === 'GET';
  let claims;
  if (!isMetadata) {
    const token = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!token) {
      finish(401);
      return sendOutcome(res, 401, 'login', 'missing bearer token', { 'www-authenticate': 'Bearer' });
    }
    try {
      ({ payload: claims } = await jwtVerify(token, publicKey, {
        issuer, audience: fhirBase, algorithms: [signingAlg],
      }));
    } catch (err) {
      finish(401);
      return sendOutcome(res, 401, 'login', `invalid access token: ${err.message}`, {
        'www-authenticate': 'Bearer error="invalid_token"',
      });
    }
    entry.client_id = claims.client_id;
    if (claims.patient !== undefined) entry.patient = claims.patient;

    if (pending.fhir_429 > 0) {
      pending.fhir_429 -= 1;
      finish(429);
      return sendOutcome(res, 429, 'throttled', 'fault: too many requests', { 'retry-after': '1' });
    }
    if (pending.fhir_503 > 0) {
      pending.fhir_503 -= 1;
      finish(503);
      return sendOutcome(res, 503, 'transient', 'fault: service unavailable');
    }
    const type = rest.split(/[/?]/)[1] ?? '';
    const faultStatus = faults.fhir_status?.[type];
    if (faultStatus !== undefined) {
      finish(faultStatus);
      return sendOutcome(res, faultStatus, OUTCOME_CODES[faultStatus] ?? 'processing', `fault: ${type} answers ${faultStatus}`);
    }
    const patientId = /^\/Patient\/([^/]+)/.exec(rest)?.[1];
    if (claims.patient !== undefined && patientId !== undefined && patientId !== claims.patient) {
      finish(403);
      return sendOutcome(res, 403, 'forbidden', `this token is confined to Patient/${claims.patient}`);
    }
  }

  const headers = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    if (req.headers[name] !== undefined) headers[name] = req.headers[name];
  }
  if (upstreamToken) headers.authorization = `Bearer ${upstreamToken}`;
  const body = ['GET', 'HEAD'].includes(req.method) ? undefined : await readBody(req);
  let upstream;
  try {
    upstream = await fetch(`${upstreamBase}${rest}${url.search}`, {
      method: req.method, headers, body, redirect: 'manual',
    });
  } catch (err) {
    console.error(`ehr.mjs: upstream ${req.method} ${upstreamBase}${rest}: ${err.cause?.message ?? err.message}`);
    finish(502);
    return sendOutcome(res, 502, 'transient', 'the upstream FHIR server is unreachable');
  }
  let payload = Buffer.from(await upstream.arrayBuffer());
  const contentType = upstream.headers.get('content-type') ?? '';
  if (/json|xml|text/.test(contentType)) {
    payload = Buffer.from(payload.toString('utf8').replaceAll(upstreamBase, fhirBase));
  }
  const responseHeaders = {};
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = upstream.headers.get(name);
    if (value !== null) responseHeaders[name] = value.replaceAll(upstreamBase, fhirBase);
  }
  finish(upstream.status);
  res.writeHead(upstream.status, { ...responseHeaders, 'content-length': payload.length });
  return res.end(req.method === 'HEAD' ? undefined : payload);
}

const providerCallback = provider.callback();

async function route(req, res) {
  const url = new URL(req.url, issuer);
  const { pathname } = url;

  if (pathname === '/fhir/.well-known/smart-configuration' && req.method === 'GET') {
    return send(res, 200, await smartConfiguration(), { 'access-control-allow-origin': '*' });
  }
  if (pathname === '/fhir' || pathname.startsWith('/fhir/')) {
    return fhirApi(req, res, url, pathname.slice('/fhir'.length));
  }
  if (pathname === '/style.json' && req.method === 'GET') {
    return send(res, 200, STYLE, { 'access-control-allow-origin': '*', 'cache-control': 'max-age=60' });
  }
  if (pathname === '/chart' && req.method === 'GET') {
    const html = chartPage(url);
    if (!html) return send(res, 400, { error: 'invalid_request', error_description: 'app must be an absolute URL' });
    return send(res, 200, html, { 'content-type': 'text/html; charset=utf-8' });
  }
  // Test hooks, not part of any EHR: what the peer saw, and faults switched at run time.
  if (pathname === '/_peer/log' && req.method === 'GET') return send(res, 200, peerLog);
  if (pathname === '/_peer/faults' && req.method === 'GET') return send(res, 200, faults);
  if (pathname === '/_peer/faults' && req.method === 'POST') {
    let next;
    try {
      next = JSON.parse((await readBody(req)).toString('utf8') || '{}');
    } catch (err) {
      return send(res, 400, { error: 'invalid_request', error_description: `faults must be JSON: ${err.message}` });
    }
    if (next === null || typeof next !== 'object' || Array.isArray(next)) {
      return send(res, 400, { error: 'invalid_request', error_description: 'faults must be a JSON object' });
    }
    setFaults(next);
    return send(res, 200, faults);
  }
  return providerCallback(req, res);
}

server.on('request', (req, res) => {
  route(req, res).catch((err) => {
    console.error(`ehr.mjs: ${req.method} ${req.url}: ${err.stack ?? err.message}`);
    if (!res.headersSent) send(res, 500, { error: 'server_error', error_description: err.message });
    else res.destroy();
  });
});

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();

process.stdout.write(`READY ${JSON.stringify({ issuer, fhir_base: fhirBase })}\n`);
