// The SCIM schemas we serve, held by scimmy: core User with the enterprise
// extension and our school extension (schemas/portal-user.json), and Group.
// scimmy's registry is process-wide, so it is configured once, here, at load.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import SCIMMY from 'scimmy';
import { ScimError, badRequest } from '../errors.js';
import { projectRoot } from '../paths.js';
import { MAX_PAGE_SIZE, MAX_PATCH_OPERATIONS } from './limits.js';
import { coerceSimpleResource } from './simple-resource.js';

export const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
export const GROUP_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:Group';
export const ENTERPRISE_SCHEMA = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
export const PORTAL_SCHEMA = 'urn:ietf:params:scim:schemas:extension:portal:2.0:User';
export const LIST_RESPONSE_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';
export const PATCH_OP_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
export const SEARCH_REQUEST_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:SearchRequest';

export { MAX_PAGE_SIZE } from './limits.js';

interface AttributeDocument {
  name: string;
  type: string;
  multiValued?: boolean;
  description?: string;
  required?: boolean;
  caseExact?: boolean;
  mutability?: string;
  returned?: string;
  uniqueness?: string;
  canonicalValues?: string[];
  subAttributes?: AttributeDocument[];
}

interface SchemaDocument {
  id: string;
  name: string;
  description?: string;
  attributes: AttributeDocument[];
}

// RFC 7643 schema representation -> scimmy Attribute. scimmy spells
// mutability as `mutable` (true for readWrite, false for readOnly).
function attributeFromDocument(doc: AttributeDocument): SCIMMY.Types.Attribute {
  const mutability = doc.mutability ?? 'readWrite';
  const returned = doc.returned ?? 'default';
  const config = {
    description: doc.description ?? '',
    multiValued: doc.multiValued ?? false,
    required: doc.required ?? false,
    caseExact: doc.caseExact ?? false,
    mutable: mutability === 'readWrite' ? true : mutability === 'readOnly' ? false : mutability,
    returned: returned === 'default' ? true : returned === 'never' ? false : returned,
    uniqueness: doc.uniqueness ?? 'none',
    ...(doc.canonicalValues?.length ? { canonicalValues: doc.canonicalValues } : {}),
  };
  return new SCIMMY.Types.Attribute(
    doc.type as 'string',
    doc.name,
    config,
    (doc.subAttributes ?? []).map(attributeFromDocument),
  );
}

function schemaFromDocument(file: string): SCIMMY.Types.SchemaDefinition {
  const doc = JSON.parse(readFileSync(file, 'utf8')) as SchemaDocument;
  return new SCIMMY.Types.SchemaDefinition(doc.name, doc.id, doc.description ?? '', doc.attributes.map(attributeFromDocument));
}

const portalDefinition = schemaFromDocument(path.join(projectRoot, 'schemas', 'portal-user.json'));

class PortalUser extends SCIMMY.Types.Schema {
  static override readonly id = PORTAL_SCHEMA;
  static override readonly definition = portalDefinition;
}

function configure(): void {
  const user = SCIMMY.Schemas.User.definition;
  // We keep no passwords, and group membership is read from /Groups.
  user.truncate('password', 'groups');
  // Entra sends types outside the RFC's suggested lists (roles of type
  // WindowsAzureActiveDirectoryRole, "Work" in any case): accept any string.
  for (const name of ['roles.type', 'emails.type', 'phoneNumbers.type', 'addresses.type', 'ims.type', 'photos.type', 'entitlements.type', 'x509Certificates.type']) {
    try {
      (user.attribute(name).config as { canonicalValues: unknown }).canonicalValues = false;
    } catch {
      // Not every multi-valued attribute declares a type in every scimmy version.
    }
  }
  SCIMMY.Resources.User.extend(SCIMMY.Schemas.EnterpriseUser, false);
  SCIMMY.Resources.User.extend(PortalUser, false);
  SCIMMY.Resources.declare(SCIMMY.Resources.User, {});
  SCIMMY.Resources.declare(SCIMMY.Resources.Group, {});
  SCIMMY.Config.set({
    patch: true,
    filter: MAX_PAGE_SIZE,
    sort: true,
    etag: true,
    // Bulk is not offered; its limits still say what one request may carry.
    bulk: { supported: false, maxOperations: MAX_PATCH_OPERATIONS },
    changePassword: false,
  });
  SCIMMY.Config.set('authenticationSchemes', [
    {
      type: 'oauthbearertoken',
      name: 'OAuth Bearer Token',
      description: 'A Secret Token issued by the portal team (portal-scim token issue), sent as Authorization: Bearer.',
      specUri: 'https://www.rfc-editor.org/info/rfc6750',
    },
    {
      type: 'oauth2',
      name: 'OAuth 2.0 client credentials',
      description:
        "An OAuth client created by the portal team (portal-scim client create) exchanges its id and secret at this server's /oauth/token " +
        '(the client credentials grant) for an access token, sent as Authorization: Bearer.',
      specUri: 'https://www.rfc-editor.org/info/rfc6749',
    },
  ]);
}

configure();

export const userDefinition: SCIMMY.Types.SchemaDefinition = SCIMMY.Schemas.User.definition;
export const groupDefinition: SCIMMY.Types.SchemaDefinition = SCIMMY.Schemas.Group.definition;

export type ResourceName = 'User' | 'Group';

export function definitionOf(resource: ResourceName): SCIMMY.Types.SchemaDefinition {
  return resource === 'User' ? userDefinition : groupDefinition;
}

/** scimmy raises TypeError for a value of the wrong shape and SCIMError for the rest. */
export function toScimError(error: unknown): ScimError {
  if (error instanceof ScimError) return error;
  const { status, scimType, message } = error as { status?: unknown; scimType?: unknown; message?: unknown };
  const detail = typeof message === 'string' ? message : 'The request is not valid.';
  if (error instanceof SCIMMY.Types.Error && typeof status === 'number') {
    return new ScimError(status, (scimType ?? undefined) as ScimError['scimType'], detail);
  }
  return badRequest('invalidValue', detail);
}

/**
 * Validates and coerces an incoming resource: directly when it is simple
 * (simple-resource.ts), else with scimmy; unknown attributes are dropped.
 */
export function coerceResource(resource: ResourceName, body: Record<string, unknown>, options: { scimmyOnly?: boolean } = {}): Record<string, unknown> {
  const definition = definitionOf(resource);
  const simple = options.scimmyOnly ? undefined : coerceSimpleResource(definition, body);
  if (simple) return simple;
  try {
    return definition.coerce(body, 'in') as Record<string, unknown>;
  } catch (error) {
    throw toScimError(error);
  }
}


/** Discovery documents without meta.location; the route adds it from PUBLIC_URL. */
export async function schemaDocuments(): Promise<Record<string, unknown>[]> {
  const list = (await new SCIMMY.Resources.Schema().read()) as unknown as { Resources: unknown[] };
  return JSON.parse(JSON.stringify(list.Resources)) as Record<string, unknown>[];
}

export async function resourceTypeDocuments(): Promise<Record<string, unknown>[]> {
  const list = (await new SCIMMY.Resources.ResourceType().read()) as unknown as { Resources: unknown[] };
  return JSON.parse(JSON.stringify(list.Resources)) as Record<string, unknown>[];
}

export async function serviceProviderConfigDocument(): Promise<Record<string, unknown>> {
  return JSON.parse(JSON.stringify(await new SCIMMY.Resources.ServiceProviderConfig().read())) as Record<string, unknown>;
}
