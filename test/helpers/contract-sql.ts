// The statements docs/database-contract.md gives the portal for members
// added by hand, read from the document so the tests run what it says.
import { readFileSync } from 'node:fs';

export interface HandMembershipSql {
  /** $1 tenant, $2 class, $3 account. */
  add: string;
  /** The statements between the transaction's BEGIN and COMMIT, in order. */
  remove: string[];
}

export function handMembershipSql(): HandMembershipSql {
  const doc = readFileSync(new URL('../../docs/database-contract.md', import.meta.url), 'utf8');
  const block = /```sql\n((?:(?!```)[\s\S])*?-- add by hand[\s\S]*?)```/.exec(doc)?.[1];
  if (!block) throw new Error('docs/database-contract.md has no block of the statements for members added by hand');
  const statements = block
    .split(';')
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s !== '');
  const [add, begin, ...rest] = statements;
  const remove = rest.slice(0, -1);
  if (!add || begin !== 'BEGIN' || rest.at(-1) !== 'COMMIT' || remove.length === 0) {
    throw new Error('expected the add, then BEGIN, the removal and COMMIT, for members added by hand');
  }
  return { add, remove };
}

export interface OverrideSql {
  /** $1 tenant, $2 account, $3 role, $4 grade. */
  set: string;
  /** $1 tenant, $2 account. */
  clear: string;
}

/** The statements docs/database-contract.md gives the portal for local overrides (rule 11). */
export function overrideSql(): OverrideSql {
  const doc = readFileSync(new URL('../../docs/database-contract.md', import.meta.url), 'utf8');
  const block = /```sql\n((?:(?!```)[\s\S])*?-- set:[\s\S]*?)```/.exec(doc)?.[1];
  if (!block) throw new Error('docs/database-contract.md has no block of the statements for overrides');
  const [set, clear, ...rest] = block
    .split(';')
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s !== '');
  if (!set || !clear || rest.length > 0) throw new Error('expected the set and the clear statement for overrides');
  return { set, clear };
}

/** The statement docs/database-contract.md gives for a manual account: $1 tenant, $2 role, $3 userName, $4 e-mail. */
export function manualAccountSql(): string {
  const doc = readFileSync(new URL('../../docs/database-contract.md', import.meta.url), 'utf8');
  const block = /```sql\n((?:(?!```)[\s\S])*?-- a manual account:[\s\S]*?)```/.exec(doc)?.[1];
  const statement = block?.replace(/^\s*--.*$/gm, '').trim().replace(/;$/, '');
  if (!statement) throw new Error('docs/database-contract.md has no statement for a manual account');
  return statement;
}

export interface LinkSql {
  /** $1 tenant, $2 account, $3 the Entra object id. */
  account: string;
  /** $1 tenant, $2 class, $3 the Entra object id. */
  klass: string;
  /** $1 tenant, $2 class, $3 account. */
  member: string;
}

/** The statements docs/database-contract.md gives for linking the old sync's rows to their Entra objects before the first sync. */
export function linkSql(): LinkSql {
  const doc = readFileSync(new URL('../../docs/database-contract.md', import.meta.url), 'utf8');
  const block = /```sql\n((?:(?!```)[\s\S])*?-- link an account:[\s\S]*?)```/.exec(doc)?.[1];
  if (!block) throw new Error('docs/database-contract.md has no block of the statements that link rows to Entra objects');
  const [account, klass, member, ...rest] = block
    .split(';')
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s !== '');
  if (!account || !klass || !member || rest.length > 0) throw new Error('expected the account, class and member statements that link rows');
  return { account, klass, member };
}
