// What of an s3db.js record the plugin keeps: s3db.js adds bookkeeping fields to the objects it
// hands to listeners and returns (`_etag`, `_v`, `_lastModified`, `_definitionHash` ... and the
// `$before` / `$after` images of a change), which no destination or log entry should get.

/**
 * The record's own fields, without s3db.js's `_*` fields and, with `strict`, without its `$*`
 * ones either (the engine drops both in Rust too: this is the same rule, applied before the
 * record is serialised).
 */
export function recordFields(record, strict = false) {
  const out = {};
  for (const key of Object.keys(record)) {
    const c = key.charCodeAt(0);
    if (c === 95 /* _ */ || (strict && c === 36 /* $ */)) continue;
    out[key] = record[key];
  }
  return out;
}

/**
 * What the engine gets of a change: the record's own fields and, for an update, its `$before`
 * image, cleaned the same way. Copying the few fields costs less than serialising the internal
 * ones: `JSON.stringify` of an s3db.js event object is most of the plugin's time on the
 * application's thread (a Date, ten fields, `$before` with as many again), and the JSON shrinks
 * to about a sixth, which the outbox writes and the engine parses.
 */
export function changePayload(data, keepBefore) {
  if (data === null || typeof data !== 'object') return data;
  const out = recordFields(data, true);
  const before = keepBefore ? data.$before : null;
  if (before !== null && typeof before === 'object') out.$before = recordFields(before, true);
  return out;
}
