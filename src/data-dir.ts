// The data directory holds the embedded cluster, its password and the
// generated signing key. Only its owner may list it; as root it must still be
// traversable, because the embedded PostgreSQL runs as the postgres user.
import { chmod, mkdir } from 'node:fs/promises';

export async function ensureDataDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (process.getuid?.() === 0) await chmod(dir, 0o711);
}
