// A real OpenID Connect provider (oidc-provider) for Hearth's SMART on FHIR tests.
//
//   node tests/peers/smart/idp.mjs <config.json>
//
// Prints `READY <issuer>` on stdout once listening on 127.0.0.1, then runs until
// SIGTERM/SIGINT or until its stdin closes. Nothing else goes to stdout. See README.md
// for the config format.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

import { exportJWK, generateKeyPair } from 'jose';

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
  console.error(`idp.mjs: ${msg}`);
  process.exit(2);
};

if (process.argv.length !== 3) die('usage: node idp.mjs <config.json>');
let config;
try {
  config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  die(`cannot read config ${process.argv[2]}: ${err.message}`);
}

const SUPPORTED_ALGS = ['RS256', 'RS384', 'ES256', 'ES384'];
const signingAlg = config.signing_alg ?? 'RS256';
if (!SUPPORTED_ALGS.includes(signingAlg)) die(`unsupported signing_alg ${signingAlg}`);

const resources = [config.resource].flat().filter(Boolean);
if (!resources.length || !resources.every((r) => typeof r === 'string')) {
  die('config.resource must be a URL string or a non-empty array of them');
}
const accounts = config.accounts ?? {};

// Split our own client metadata (hearth_*) from what oidc-provider validates.
const clientExtras = new Map();
const clients = (config.clients ?? []).map((entry) => {
  const { hearth_claims: claims = {}, hearth_access_token_ttl: ttl = 300, ...metadata } = entry;
  clientExtras.set(metadata.client_id, { claims, ttl });
  return { id_token_signed_response_alg: signingAlg, ...metadata };
});

// Every scope any client may ask for; the resource server (Hearth) accepts all of them.
const resourceScopes = [...new Set(clients.flatMap((c) => (c.scope ?? '').split(' ')).filter(Boolean))];

// The provider's signing key, fresh for every run.
const { privateKey } = await generateKeyPair(signingAlg, { extractable: true });
const signingJwk = {
  ...(await exportJWK(privateKey)),
  kid: `idp-${signingAlg.toLowerCase()}-${randomBytes(4).toString('hex')}`,
  use: 'sig',
  alg: signingAlg,
};

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const ttlFor = (clientId) => clientExtras.get(clientId)?.ttl ?? 300;
const algs = [signingAlg];

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  clientDefaults: { id_token_signed_response_alg: signingAlg },
  // Client `scope` metadata may only name scopes the provider knows about.
  scopes: ['openid', 'offline_access', ...resourceScopes],
  enabledJWA: {
    idTokenSigningAlgValues: algs,
    userinfoSigningAlgValues: algs,
    introspectionSigningAlgValues: algs,
    authorizationSigningAlgValues: algs,
  },
  // `fhirUser` (and `profile`) are OIDC scopes: their claims go to the ID token.
  claims: {
    openid: ['sub'],
    fhirUser: ['fhirUser'],
    profile: ['name', 'given_name', 'family_name'],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => (oneOf ? [oneOf].flat()[0] : resources[0]),
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator, client) => {
        if (!resources.includes(indicator)) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        return {
          scope: resourceScopes.join(' '),
          audience: indicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ttlFor(client.clientId),
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
    for (const [indicator, server] of Object.entries(oidc.resourceServers)) {
      const granted = [...oidc.requestParamScopes].filter((s) => server.scopes.has(s)).join(' ');
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
  // Client hearth_claims win over the account's fhirUser/patient.
  extraTokenClaims: async (_ctx, token) => {
    const extra = {};
    const account = token.accountId ? accounts[token.accountId] : undefined;
    for (const name of ['fhirUser', 'patient']) {
      if (account?.[name] !== undefined) extra[name] = account[name];
    }
    Object.assign(extra, clientExtras.get(token.clientId)?.claims);
    return extra;
  },
  ttl: {
    AccessToken: (_ctx, token, client) => token.resourceServer?.accessTokenTTL ?? ttlFor(client.clientId),
    ClientCredentials: (_ctx, token, client) => token.resourceServer?.accessTokenTTL ?? ttlFor(client.clientId),
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 3600,
  },
  clientBasedCORS: () => true,
  renderError: (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});

// An unknown login would otherwise crash oidc-provider later (no account, no grant):
// end the interaction with access_denied instead. Hands the parsed form on as req.body.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'POST' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
  if (form.prompt === 'login' && !Object.hasOwn(accounts, form.login ?? '')) {
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
      error: 'access_denied',
      error_description: `unknown account ${form.login}`,
    }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return undefined;
  }
  ctx.req.body = form;
  return next();
});

// SMART launch context: echo the token's `patient` claim in the token response too.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && typeof ctx.body?.access_token === 'string') {
    try {
      const payload = JSON.parse(Buffer.from(ctx.body.access_token.split('.')[1], 'base64url'));
      if (payload.patient !== undefined) ctx.body = { ...ctx.body, patient: payload.patient };
    } catch {
      // opaque token: nothing to echo
    }
  }
});

for (const event of ['server_error', 'grant.error', 'authorization.error', 'introspection.error']) {
  provider.on(event, (_ctx, err) => {
    console.error(`idp.mjs ${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
  });
}

server.on('request', provider.callback());

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();

process.stdout.write(`READY ${issuer}\n`);
