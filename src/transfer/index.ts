// Picks the workspace transfer (types.ts): the shared volume at the data dir, the only one so far (an object store
// would be another folder here).
import type { Config } from '../config.ts';
import type { KeyStore } from '../store/types.ts';
import { SharedVolumeTransfer } from './shared-volume/shared-volume.ts';
import type { WorkspaceTransfer } from './types.ts';

/** A data dir shared with other processes (a Postgres store) is checked at start-up against the database. */
export function openWorkspaceTransfer(config: Config, keys: KeyStore): WorkspaceTransfer {
  if (config.databaseUrl === undefined) return new SharedVolumeTransfer(config.dataDir);
  return new SharedVolumeTransfer(config.dataDir, async (token) => (await keys.serverSecret('data-dir-marker', Buffer.from(token, 'hex'))).toString('hex'));
}
