// SCIM discovery: what this server supports, answered truthfully.
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';

export function serviceProviderConfig(config: Config): Record<string, unknown> {
  return {
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig'],
    documentationUri: `${config.publicUrl}/docs`,
    patch: { supported: false },
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    filter: { supported: false, maxResults: 0 },
    changePassword: { supported: false },
    sort: { supported: false },
    etag: { supported: false },
    authenticationSchemes: [
      {
        type: 'oauthbearertoken',
        name: 'Secret Token',
        description: 'A bearer token issued by the portal team with "portal-scim token issue".',
        primary: true,
      },
    ],
    meta: {
      resourceType: 'ServiceProviderConfig',
      location: `${config.publicUrl}/scim/v2/ServiceProviderConfig`,
    },
  };
}

export async function discoveryRoutes(app: FastifyInstance, options: { config: Config }): Promise<void> {
  const document = serviceProviderConfig(options.config);
  app.get('/ServiceProviderConfig', async () => document);
}
