// A revoked token stops working when the credential check it was accepted on
// runs out, however the client spells the Authorization scheme: the accepted
// tokens are remembered by token, not by header.
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { revokeCredential } from '../src/db/credentials.js';
import { testApp } from './helpers/app.js';

t.test('a revoked token is refused under every spelling of "Bearer" as soon as under one', async (t) => {
  const cacheSeconds = 3;
  const { app, token, credentialId, db } = await testApp(t, { CREDENTIAL_CACHE_SECONDS: String(cacheSeconds) });
  const spellings = ['Bearer', 'bearer', 'BEARER'];
  const get = (scheme: string) => app.inject({ method: 'GET', url: '/scim/v2/Users?count=1', headers: { authorization: `${scheme} ${token}` } });

  const acceptedAt = Date.now();
  t.equal((await get('Bearer')).statusCode, 200, 'the token works');
  // Half the cache time later the other spellings are used for the first
  // time: remembered by header, they would start periods of their own that
  // outlive the first by this much.
  await sleep((cacheSeconds * 1000) / 2);
  for (const scheme of spellings) t.equal((await get(scheme)).statusCode, 200, `"${scheme}" works too`);

  await revokeCredential(db, credentialId);
  let status = 200;
  for (let i = 0; i < 100 && status === 200; i++) {
    await sleep(100);
    status = (await get('Bearer')).statusCode;
  }
  t.equal(status, 401, 'the revoked token is refused once the check it was accepted on has run out');
  t.comment(`refused ${Date.now() - acceptedAt} ms after the token was first accepted (CREDENTIAL_CACHE_SECONDS=${cacheSeconds})`);
  for (const scheme of spellings) {
    const res = await get(scheme);
    t.equal(res.statusCode, 401, `"${scheme}" is refused at the same moment`);
    t.match(res.json(), { detail: /revoked/ });
  }
});

t.test('the scheme is case-insensitive and surrounding spaces are tolerated', async (t) => {
  // Nothing remembered: each spelling is verified on its own.
  const { app, token } = await testApp(t, { CREDENTIAL_CACHE_SECONDS: '0' });
  for (const authorization of [`bearer ${token}`, `BeArEr ${token}`, ` Bearer  ${token} `]) {
    const res = await app.inject({ method: 'GET', url: '/scim/v2/Users?count=1', headers: { authorization } });
    t.equal(res.statusCode, 200, JSON.stringify(authorization.replace(token, '<token>')));
  }
  const wrong = await app.inject({ method: 'GET', url: '/scim/v2/Users?count=1', headers: { authorization: `Bearer ${token} extra` } });
  t.equal(wrong.statusCode, 401, 'a header with more than one token is refused');
});
