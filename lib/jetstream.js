// The publishing side of the JetStream outbox (modes 'publish' and 'both'): each accepted
// change is published from the resource's after* hook, which s3db.js awaits, so insert() /
// update() / delete() resolve only once the server has stored the change. The Rust publisher
// keeps many publishes in flight on one connection; each hook awaits its own ack.

import { connectJetstreamPublisher } from './native.js';
import { ReplicatorError } from './errors.js';

/** 'ERR_JETSTREAM: message' (how the addon's async functions reject) → a ReplicatorError. */
export function jetstreamError(error, context = {}) {
  const text = String(error?.message ?? error);
  const match = /^(ERR_[A-Z_]+): ([\s\S]*)$/.exec(text);
  const code = match ? match[1] : 'ERR_JETSTREAM';
  const message = match ? match[2] : text;
  return new ReplicatorError(`ReplicatorPlugin: ${message}`, {
    code,
    description: code === 'ERR_CONFIG'
      ? 'Fix outbox.jetstream (see "Scaling out" in the README).'
      : 'Check that the NATS server in outbox.jetstream.url runs with JetStream (-js) and is reachable.',
    context,
    cause: error,
  });
}

export async function openPublisher(jetstreamOptions) {
  try {
    return await connectJetstreamPublisher(JSON.stringify(jetstreamOptions ?? {}));
  } catch (error) {
    throw jetstreamError(error, { option: 'outbox.jetstream' });
  }
}

/** Publishes one change; rejects with a ReplicatorError (ERR_JETSTREAM) when not stored. */
export async function publishChange(publisher, resourceName, op, data) {
  const id = data?.id == null ? '' : String(data.id);
  try {
    return await publisher.publish(resourceName, op, id, JSON.stringify(data));
  } catch (error) {
    throw jetstreamError(error, { resourceName, operation: op, recordId: id });
  }
}
