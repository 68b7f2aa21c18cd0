#!/usr/bin/env node
// s3db-replicator command line: `sync`, `status`, `dead-letters`, `worker`, `help`, `--version`.
// Each command lives in lib/cli/<command>.js (usage, options, run); every message goes through
// lib/cli/output.js, which redacts the credentials of --connection and of the config.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import * as deadLetters from '../lib/cli/dead-letters.js';
import { addSecrets, err, UsageError } from '../lib/cli/output.js';
import * as status from '../lib/cli/status.js';
import * as sync from '../lib/cli/sync.js';

// `worker` (JetStream outbox delivery) lives in its own module.
if (process.argv[2] === 'worker') process.exit(await (await import('../lib/worker.js')).runWorker(process.argv.slice(3)));

const VERSION = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;

const COMMANDS = { sync, status, 'dead-letters': deadLetters };
const NAMES = Object.keys(COMMANDS);

const USAGE = `s3db-replicator ${VERSION}: replication for s3db.js (Rust engine)

Usage: s3db-replicator <command> --connection <connection string> --config <file.mjs> [options]

Commands:
${NAMES.map((n) => `  ${n.padEnd(18)}${COMMANDS[n].summary}`).join('\n')}
  worker            deliver the changes of a JetStream outbox (README "Scaling out"; worker --help)
  help [command]    show this help, or a command's
  -v, --version     print the version

Every command takes the source database (--connection) and the plugin options (--config) of the
app; \`s3db-replicator help <command>\` (or \`<command> --help\`) shows its options.

${sync.usage}`;

const COMMON = { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } };

async function main(argv) {
  // The command is the first positional; which words are option values depends on the options,
  // so find it with every command's options known (leniently), then parse strictly.
  const every = Object.assign({}, COMMON, ...Object.values(COMMANDS).map((c) => c.options));
  const command = COMMANDS[parseArgs({ args: argv, allowPositionals: true, strict: false, options: every }).positionals[0]];
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { ...COMMON, ...(command?.options ?? {}) } });
  } catch (error) {
    throw new UsageError(error.message, command?.usage ?? USAGE);
  }
  const { values, positionals } = parsed;
  if (values.connection) addSecrets(values.connection);
  const [name, ...rest] = positionals;
  if (values.version || name === 'version') {
    process.stdout.write(`s3db-replicator ${VERSION}\n`);
    return 0;
  }
  if (name === 'help') {
    if (rest.length === 0) process.stdout.write(USAGE);
    else if (COMMANDS[rest[0]]) process.stdout.write(COMMANDS[rest[0]].usage);
    else throw new UsageError(`no help for '${rest[0]}' (commands: ${NAMES.join(', ')})`, USAGE);
    return 0;
  }
  if (values.help) {
    process.stdout.write(command?.usage ?? USAGE);
    return 0;
  }
  if (!name) throw new UsageError(`missing command (${NAMES.join(', ')})`, USAGE);
  if (!command) throw new UsageError(`unknown command '${name}' (commands: ${NAMES.join(', ')}, worker, help)`, USAGE);
  return command.run(values, rest);
}

process.on('SIGINT', () => {
  err('\ninterrupted (a sync resumes from its checkpoint when run again)');
  process.exit(130);
});

let code;
try {
  code = await main(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError) {
    err(`error: ${error.message}\n`);
    process.stderr.write(error.usage);
  } else {
    err(`error: ${error?.message ?? error}`);
    if (error?.description && error.description !== error.message) err(error.description);
  }
  code = 1;
}
process.exit(code);
