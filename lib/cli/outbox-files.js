// Read-only views of an outbox directory for the command line, safe while a running process
// owns it: status.json (lib/status-file.js) and dead-letters.jsonl (src/outbox/dead_letter_file.rs:
// `{"add":id,"record":{...}}` and `{"remove":id}` lines, replaced atomically when compacted).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { STATUS_FILE, STATUS_INTERVAL_MS } from '../status-file.js';

/** A snapshot older than this, from a process that did not say it stopped, is a crashed one. */
const STALE_MS = 10 * STATUS_INTERVAL_MS;

/** The last status written into `dir`, or null when no plugin ever ran on it. */
export async function readStatus(dir) {
  let text;
  try {
    text = await readFile(join(dir, STATUS_FILE), 'utf8');
  } catch (error) {
    if (error.code === 'ENOENT') return null;
    throw error;
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${join(dir, STATUS_FILE)} is not valid JSON (${error.message})`);
  }
}

/**
 * 'running' when the process that wrote `status` is alive and wrote it recently, else
 * 'stopped' (it stopped, or it was killed: `stoppedAt` is then null).
 */
export function stateOf(status, now = Date.now()) {
  if (!status) return 'never-started';
  if (status.stoppedAt) return 'stopped';
  if (now - Date.parse(status.updatedAt) > STALE_MS) return 'stopped';
  try {
    process.kill(status.pid, 0);
    return 'running';
  } catch (error) {
    return error.code === 'EPERM' ? 'running' : 'stopped';
  }
}

/** The dead letters kept in `dir`, oldest first, in getDeadLetters()' shape. */
export async function readDeadLetters(dir) {
  let text;
  try {
    text = await readFile(join(dir, 'dead-letters.jsonl'), 'utf8');
  } catch (error) {
    if (error.code === 'ENOENT') return [];
    throw error;
  }
  const live = new Map();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let entry;
    try {
      entry = JSON.parse(line);
    } catch {
      continue; // a torn last line (being written): the engine skips it too
    }
    if (entry.add !== undefined && entry.record) live.set(entry.add, { ...entry.record, id: entry.add });
    else if (entry.remove !== undefined) live.delete(entry.remove);
  }
  return [...live.values()].sort((a, b) => a.id - b.id);
}
