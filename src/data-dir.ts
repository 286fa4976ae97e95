// The data directory holds the embedded cluster, its password and the
// generated signing key. Only its owner may list it; as root it must still be
// traversable, because the embedded PostgreSQL runs as the postgres user.
import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';

export async function ensureDataDir(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: 0o700 });
  if (process.getuid?.() !== 0) return;
  // Every folder we created, and the leaf itself, must be traversable.
  let current = path.resolve(dir);
  const stop = first ? path.dirname(path.resolve(first)) : current;
  do {
    await chmod(current, 0o711);
    current = path.dirname(current);
  } while (first && current !== stop && current !== path.dirname(current));
}
