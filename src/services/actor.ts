// Who asked for an operation, as its audit event records it: the CLI, or the
// admin API or a status page with the admin credential it was called with.
export type Actor = { via: 'cli' } | { via: 'admin-api' | 'status-page'; adminCredentialId: string };

export function auditVia(actor: Actor): Record<string, string> {
  return actor.via === 'cli' ? { via: 'cli' } : { via: actor.via, adminCredentialId: actor.adminCredentialId };
}
