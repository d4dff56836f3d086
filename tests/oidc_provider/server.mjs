// A real OpenID provider (the certified `oidc-provider` package) for the identity tests.
//
//   node server.mjs alpha beta ...
//
// starts one provider per name, each on its own 127.0.0.1 port (issuer
// `http://127.0.0.1:PORT`), and prints one JSON line `{"alpha": "http://127.0.0.1:PORT", ...}`
// once they all listen. It exits when its standard input closes (the test run ended).
//
// Tokens come from the provider's own token endpoint: a test registers a client through
// dynamic client registration, carrying in its `tenantry_claims` metadata the user the
// token speaks for (sub, email, email_verified, names) and, for the security tests, the
// claims a hostile or broken issuer would send (iss, exp/nbf/iat offsets), then asks the
// token endpoint for a client-credentials JWT access token for a resource (`aud`), signed by
// the provider with its own key for the algorithm asked (`tenantry_alg`: RS256 or ES256).
//
// `POST /__rotate` (`{"keepOld": false}`) replaces the provider's signing keys with new ones:
// the provider is rebuilt with the new key set, so its JWKS endpoint and its token endpoint
// both move to the new keys at once (with `keepOld`, the old keys stay published).

import * as http from 'node:http';
import * as crypto from 'node:crypto';

import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

const ALGS = ['RS256', 'ES256'];

async function newKeys() {
  const keys = [];
  for (const alg of ALGS) {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    const jwk = await exportJWK(privateKey);
    keys.push({ ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomUUID()}` });
  }
  return keys;
}

function claimsOf(client) {
  const raw = client.tenantryClaims ?? client.metadata().tenantry_claims ?? {};
  return typeof raw === 'object' && raw !== null ? raw : {};
}

function buildProvider(issuer, keys) {
  const provider = new Provider(issuer, {
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resource, client) => ({
          scope: 'api',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: client.metadata().tenantry_alg ?? 'RS256' } },
        }),
      },
    },
    extraClientMetadata: {
      properties: ['tenantry_claims', 'tenantry_alg'],
      validator(ctx, key, value) {
        if (key === 'tenantry_alg' && value !== undefined && !ALGS.includes(value)) {
          throw new Error(`tenantry_alg must be one of ${ALGS.join(', ')}`);
        }
      },
    },
    formats: {
      customizers: {
        // The user the token speaks for, as a hosted provider's JWT template would put it.
        async jwt(ctx, token, jwt) {
          const { exp_offset: expOffset, nbf_offset: nbfOffset, iat_offset: iatOffset, ...claims } =
            claimsOf(token.client);
          const now = Math.floor(Date.now() / 1000);
          Object.assign(jwt.payload, claims);
          if (iatOffset !== undefined) jwt.payload.iat = now + iatOffset;
          if (expOffset !== undefined) jwt.payload.exp = now + expOffset;
          if (nbfOffset !== undefined) jwt.payload.nbf = now + nbfOffset;
        },
      },
    },
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
    },
  });
  provider.on('server_error', (ctx, err) => process.stderr.write(`provider error: ${err.stack}\n`));
  return provider;
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString() || '{}';
  return JSON.parse(text);
}

async function startOne() {
  let keys = await newKeys();
  let provider;
  const server = http.createServer(async (req, res) => {
    if (req.method === 'POST' && req.url === '/__rotate') {
      const { keepOld = false } = await readJson(req);
      const fresh = await newKeys();
      keys = keepOld ? [...fresh, ...keys] : fresh;
      provider = buildProvider(provider.issuer, keys);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kids: keys.map((k) => k.kid) }));
      return;
    }
    provider.callback()(req, res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = buildProvider(issuer, keys);
  return { issuer, server };
}

const names = process.argv.slice(2);
if (names.length === 0) {
  process.stderr.write('usage: node server.mjs NAME...\n');
  process.exit(2);
}
const started = {};
const servers = [];
for (const name of names) {
  const { issuer, server } = await startOne();
  started[name] = issuer;
  servers.push(server);
}
process.stdout.write(`${JSON.stringify(started)}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  for (const server of servers) server.close();
  process.exit(0);
});
