// SCIM discovery (RFC 7644 §4): ServiceProviderConfig, Schemas and
// ResourceTypes, built by scimmy from the schemas we serve, located at PUBLIC_URL.
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { ScimError, notFound } from '../errors.js';
import { GUIDE_PATH } from './docs.js';
import { LIST_RESPONSE_SCHEMA, resourceTypeDocuments, schemaDocuments, serviceProviderConfigDocument } from '../scim/schemas.js';

type Json = Record<string, unknown>;

function located(document: Json, location: string): Json {
  return { ...document, meta: { ...((document.meta) ?? {}), location } };
}

function listResponse(resources: Json[]): Json {
  return { schemas: [LIST_RESPONSE_SCHEMA], totalResults: resources.length, startIndex: 1, itemsPerPage: resources.length, Resources: resources };
}

export async function discoveryRoutes(app: FastifyInstance, options: { config: Config }): Promise<void> {
  const base = `${options.config.publicUrl}/scim/v2`;
  const provider = await serviceProviderConfigDocument();
  const spc = located(
    {
      ...provider,
      // The largest body this server accepts (BODY_LIMIT_BYTES).
      bulk: { ...(provider.bulk as Json), maxPayloadSize: options.config.bodyLimitBytes },
      // The setup guide, served by this server (routes/docs.ts), which also says how to get each credential.
      documentationUri: `${options.config.publicUrl}${GUIDE_PATH}`,
      authenticationSchemes: (provider.authenticationSchemes as Json[]).map((scheme) => ({ ...scheme, documentationUri: `${options.config.publicUrl}${GUIDE_PATH}` })),
    },
    `${base}/ServiceProviderConfig`,
  );
  const schemas = (await schemaDocuments()).map((s) => located(s, `${base}/Schemas/${String(s.id)}`));
  const resourceTypes = (await resourceTypeDocuments()).map((r) => located(r, `${base}/ResourceTypes/${String(r.id)}`));

  // RFC 7644 §4: the discovery endpoints do not filter, and say so with 403.
  app.addHook('preHandler', async (request) => {
    if (request.method === 'GET' && Object.hasOwn(request.query as object, 'filter')) {
      throw new ScimError(403, undefined, 'The discovery endpoints take no filter (RFC 7644 §4): read the whole list.');
    }
  });

  app.get('/ServiceProviderConfig', async () => spc);
  app.get('/Schemas', async () => listResponse(schemas));
  app.get('/Schemas/:id', async (request) => {
    const { id } = request.params as { id: string };
    const found = schemas.find((s) => String(s.id).toLowerCase() === id.toLowerCase());
    if (!found) throw notFound(`No schema ${id}.`);
    return found;
  });
  app.get('/ResourceTypes', async () => listResponse(resourceTypes));
  app.get('/ResourceTypes/:id', async (request) => {
    const { id } = request.params as { id: string };
    const found = resourceTypes.find((r) => String(r.id).toLowerCase() === id.toLowerCase());
    if (!found) throw notFound(`No resource type ${id}.`);
    return found;
  });
  for (const url of ['/ServiceProviderConfig', '/Schemas', '/ResourceTypes']) {
    app.route({
      method: ['POST', 'PUT', 'PATCH', 'DELETE'],
      url,
      config: { methodNotAllowed: true },
      handler: async (request, reply) => {
        reply.header('allow', 'GET');
        throw new ScimError(405, undefined, `${request.method} is not supported on ${url}; it is read-only.`);
      },
    });
  }
}
