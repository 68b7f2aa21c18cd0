// What every command prints goes through here: redacted (credentials of --connection and of
// the config never reach the terminal), to stdout (results) or stderr (progress, errors).
import { redact, secretsIn, secretsOf } from '../redact.js';

const secrets = new Set();

/** Registers the secrets of a connection string or a configuration for redaction. */
export function addSecrets(value) {
  if (typeof value === 'string') for (const s of secretsOf(value)) secrets.add(s);
  else secretsIn(value, secrets);
}

export const clean = (text) => redact(text, secrets);
export const out = (text) => process.stdout.write(`${clean(text)}\n`);
export const err = (text) => process.stderr.write(`${clean(text)}\n`);

/** A mistake in the command line: printed with the command's usage, exit status 1. */
export class UsageError extends Error {
  constructor(message, usage) {
    super(message);
    this.usage = usage;
  }
}
