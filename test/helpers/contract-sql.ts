// The statements docs/database-contract.md gives the portal for members
// added by hand, read from the document so the tests run what it says.
import { readFileSync } from 'node:fs';

export interface HandMembershipSql {
  /** $1 tenant, $2 class, $3 account. */
  add: string;
  /** Both, each on its own and in this order. */
  remove: [string, string];
}

export function handMembershipSql(): HandMembershipSql {
  const doc = readFileSync(new URL('../../docs/database-contract.md', import.meta.url), 'utf8');
  const block = /```sql\n((?:(?!```)[\s\S])*?-- add by hand[\s\S]*?)```/.exec(doc)?.[1];
  if (!block) throw new Error('docs/database-contract.md has no block of the statements for members added by hand');
  const statements = block
    .split(';')
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s !== '');
  const [add, removeRow, removeMark] = statements;
  if (statements.length !== 3 || !add || !removeRow || !removeMark) throw new Error(`expected 3 statements for members added by hand, found ${statements.length}`);
  return { add, remove: [removeRow, removeMark] };
}
