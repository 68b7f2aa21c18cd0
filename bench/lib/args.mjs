// Command-line options of bench/compare.mjs (no dependency: `--key value`, `--flag`).

import os from 'node:os';

/** The sections of a run: `compare` (stock vs ours), `durability` (ours, outbox off vs on), `jetstream` (delivery workers) and `demo` (the README demo). */
export const SECTIONS = ['compare', 'durability', 'jetstream', 'demo'];
/** Outbox variants of the durability section (see lib/durability.mjs). */
export const OUTBOX_VARIANTS = ['off', 'disk', 'nofsync', 'jetstream'];

export const DEFAULTS = {
  n: 10_000, // changes per run (inserts + updates + deletes)
  quick: false, // N = 2,000, fewer scenarios: a smoke run in well under a minute
  big: false, // N = 100,000
  repeat: 1, // runs of every variant; the table shows medians
  concurrency: 64, // writes in flight for the concurrent writer (and the HTTP limit client)
  timeout: 300, // seconds a run may take to deliver everything before it is called incomplete
  writers: 'seq,conc,seq-yield,conc-yield,paced-1000,paced-5000',
  // A SQL or AWS destination whose server does not answer is skipped (unless named in --dests).
  // sqs is opt-in: moto's SQS slows down with every message a queue holds (see bench/README.md).
  dests: 's3db,webhook,postgres,mysql,dynamodb',
  'pg-url': process.env.POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/test',
  'mysql-url': process.env.MYSQL_URL || 'mysql://root@127.0.0.1:3306/test',
  'aws-url': process.env.S3DB_REPLICATOR_AWS_ENDPOINT || 'http://127.0.0.1:45660', // the AWS-compatible server (moto) of sqs and dynamodb
  out: new URL('../results/', import.meta.url).pathname,
  seed: 42,
  plugin: new URL('../../plugin.js', import.meta.url).pathname, // our plugin module to benchmark
  from: '', // results.json of an earlier run: only re-render its tables and chart
  only: SECTIONS.join(','), // sections to run: compare (stock vs ours), durability (outbox off vs on), jetstream (1, 2, 4 delivery workers), demo (the README demo)
  outbox: OUTBOX_VARIANTS.join(','), // durability variants: off = outbox: false, disk = { dir } (fsync every 20 ms), nofsync = { dir, fsync: 'off' }, jetstream = { jetstream } in mode 'both'
  'outbox-root': os.tmpdir(), // where the durability variants' fresh outbox directories are made (and removed)
};

const DEFAULTS_TMP = os.tmpdir();
const HELP = `usage: node bench/compare.mjs [--n 10000] [--quick] [--big] [--repeat 1]
       [--writers seq,conc,seq-yield,conc-yield,paced-1000,paced-5000] [--dests s3db,webhook,postgres,mysql,dynamodb] (also: sqs)
       [--pg-url postgres://postgres@127.0.0.1:5432/test] [--mysql-url mysql://root@127.0.0.1:3306/test]
         (defaults: $POSTGRES_URL / $MYSQL_URL, else these; tables are created and dropped per run)
       [--aws-url http://127.0.0.1:45660]   (moto, for sqs and dynamodb: scripts/services/moto.sh starts it;
         default $S3DB_REPLICATOR_AWS_ENDPOINT, else this; a queue / table per run)
       [--concurrency 64] [--timeout 300] [--out bench/results/] [--seed 42]
       [--plugin path/to/plugin.js]   (ours; default: this repository's plugin.js)
       [--from bench/results/results.json]   (re-render an earlier run, run nothing)
       [--only compare,durability,jetstream,demo]   (sections: compare = stock vs ours; durability = ours with the
         outbox off vs on disk vs on JetStream, on --dests s3db,webhook unless --dests is given;
         jetstream = a backlog drained by 1, 2 and 4 delivery workers to the webhook;
         demo = the README demo, 20,000 changes: how long after the last write all are delivered)
       [--outbox off,disk,nofsync,jetstream] [--outbox-root ${DEFAULTS_TMP}]   (durability variants; parent of their temp dirs)
         (jetstream and its section start a nats-server of their own: scripts/services/nats.sh --bin)`;

export function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      console.log(HELP);
      process.exit(0);
    }
    if (!arg.startsWith('--')) throw new Error(`unexpected argument '${arg}'\n${HELP}`);
    const key = arg.slice(2);
    if (!(key in DEFAULTS)) throw new Error(`unknown option --${key}\n${HELP}`);
    if (typeof DEFAULTS[key] === 'boolean') {
      opts[key] = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined) throw new Error(`--${key} needs a value`);
    opts[key] = typeof DEFAULTS[key] === 'number' ? Number(value) : value;
    if (typeof DEFAULTS[key] === 'number' && !(opts[key] > 0)) throw new Error(`--${key} must be a positive number`);
  }
  const explicitN = argv.includes('--n');
  if (opts.quick && !explicitN) opts.n = 2_000;
  if (opts.big && !explicitN) opts.n = 100_000;
  opts.writers = opts.writers.split(',').filter(Boolean);
  opts.dests = opts.dests.split(',').filter(Boolean);
  opts.explicitDests = argv.includes('--dests');
  opts.only = opts.only.split(',').filter(Boolean);
  for (const s of opts.only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section '${s}' (have: ${SECTIONS.join(', ')})`);
  opts.outbox = opts.outbox.split(',').filter(Boolean);
  for (const v of opts.outbox) if (!OUTBOX_VARIANTS.includes(v)) throw new Error(`--outbox: unknown variant '${v}' (have: ${OUTBOX_VARIANTS.join(', ')})`);
  if (opts.only.includes('durability') && !opts.outbox.includes('off')) throw new Error('--outbox must include off (the baseline of the durability section)');
  // The durability section runs on s3db and webhook (the outbox's cost does not depend on the
  // destination; these add no database server to the noise) unless --dests names others.
  opts.durabilityDests = opts.explicitDests ? [...opts.dests] : opts.dests.filter((d) => d === 's3db' || d === 'webhook');
  return opts;
}
