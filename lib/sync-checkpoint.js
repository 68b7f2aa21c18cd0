// The checkpoint of a full sync (syncAllData), one file per replicator:
//   <outbox dir>/sync/<replicatorId>.json
// It records how far the sync got: every record of the resources before `resourceIndex`, and
// those of `resources[resourceIndex]` whose id sorts at or before `lastId`, were ACCEPTED by the
// engine. Accepted changes sit in the engine's disk outbox and are replayed after a crash, so a
// later syncAllData only has to push what comes after this position.
// Writes are atomic (a temporary file renamed over the old one) and coalesced: while one write
// runs, only the newest state waits for the next.

import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const CHECKPOINT_VERSION = 1;

/**
 * @typedef {object} SyncCheckpoint
 * @property {number} version
 * @property {string} replicatorId
 * @property {string[]} resources     the replicator's source resources, in sync order
 * @property {number} resourceIndex   the resource the sync is in
 * @property {string|null} lastId     last id (sorted order) accepted in that resource; null: none yet
 * @property {number} done            records covered so far (accepted, or skipped because unreadable / gone)
 * @property {string} startedAt       ISO time the (first, interrupted) sync started
 * @property {string} updatedAt
 */

/** The order ids are synced in (UTF-16 code units, like Array#sort): the same on every run. */
export function compareIds(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

export class CheckpointStore {
  /**
   * @param {string} outboxDir the engine's disk outbox directory
   * @param {string} replicatorId
   */
  constructor(outboxDir, replicatorId) {
    this.dir = join(outboxDir, 'sync');
    this.file = join(this.dir, `${encodeURIComponent(replicatorId)}.json`);
    this.replicatorId = replicatorId;
    this._latest = null;
    this._writing = null;
    this._error = null;
  }

  /**
   * The saved checkpoint when it belongs to this replicator and these resources, else null
   * (with `reason` saying why it was ignored: a missing file is not a reason).
   * @param {string[]} resources
   * @returns {Promise<{ checkpoint: SyncCheckpoint|null, reason?: string }>}
   */
  async load(resources) {
    let text;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if (error.code === 'ENOENT') return { checkpoint: null };
      return { checkpoint: null, reason: `could not read ${this.file}: ${error.message}` };
    }
    let cp;
    try {
      cp = JSON.parse(text);
    } catch {
      return { checkpoint: null, reason: `${this.file} is not valid JSON (a write was cut short)` };
    }
    const valid = cp && cp.version === CHECKPOINT_VERSION && cp.replicatorId === this.replicatorId
      && Array.isArray(cp.resources) && Number.isInteger(cp.resourceIndex) && cp.resourceIndex >= 0
      && cp.resourceIndex < Math.max(1, cp.resources.length)
      && (cp.lastId === null || typeof cp.lastId === 'string') && Number.isInteger(cp.done) && cp.done >= 0;
    if (!valid) return { checkpoint: null, reason: `${this.file} is not a checkpoint of replicator '${this.replicatorId}'` };
    if (cp.resources.length !== resources.length || cp.resources.some((r, i) => r !== resources[i])) {
      return { checkpoint: null, reason: `the replicator's resources changed since the checkpoint (${cp.resources.join(', ')} → ${resources.join(', ')})` };
    }
    return { checkpoint: cp };
  }

  /** Queues `state` to be written; returns at once. */
  save(state) {
    this._latest = state;
    if (!this._writing) this._writing = this._drain();
  }

  /** Resolves when every queued write is on disk; rejects with the last write error, if any. */
  async idle() {
    while (this._writing) await this._writing;
    if (this._error) {
      const error = this._error;
      this._error = null;
      throw error;
    }
  }

  /** Removes the checkpoint (after pending writes, so none recreates it). */
  async remove() {
    this._latest = null;
    while (this._writing) await this._writing;
    this._error = null;
    await rm(this.file, { force: true });
  }

  async _drain() {
    try {
      while (this._latest) {
        const state = this._latest;
        this._latest = null;
        try {
          await mkdir(this.dir, { recursive: true });
          const tmp = `${this.file}.${process.pid}.tmp`;
          await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
          await rename(tmp, this.file);
          this._error = null;
        } catch (error) {
          this._error = error;
        }
      }
    } finally {
      this._writing = null;
    }
  }
}
