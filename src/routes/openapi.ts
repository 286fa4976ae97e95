// GET /openapi.yaml: the HTTP surface as documented in the project root's
// openapi.yaml (found from src/ and from the build in dist/ alike).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { projectRoot } from '../paths.js';

export async function openapiRoutes(app: FastifyInstance): Promise<void> {
  // Read once at start: a missing file stops the server instead of failing later.
  const document = await readFile(path.join(projectRoot, 'openapi.yaml'), 'utf8');
  app.get('/openapi.yaml', async (_request, reply) => reply.type('application/yaml; charset=utf-8').send(document));
}
