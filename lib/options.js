// Prepares plugin options for the native engine: functions stay in JavaScript (kept in a
// table and replaced by { $fn: id }), existing Database clients are kept aside, and the rest
// crosses the FFI as JSON. All validation of the result happens in Rust (checkConfig).

import { didYouMean } from './native.js';
import { ReplicatorError } from './errors.js';

/** Options the engine reads; the plugin's own (verbose, logs, ...) stay in JavaScript. */
const ENGINE_OPTIONS = [
  'enabled', 'batchSize', 'bulkBatchSize', 'maxRetries', 'timeout', 'queueCapacity', 'lingerMs', 'concurrency', 'retryDelay', 'maxRetryDelay',
  'circuitBreaker', 'metrics', 'mode',
];
const REPLICATOR_KEYS = new Set(['id', 'driver', 'resources', 'config', 'enabled', 'client']);
/** The plugin's own options (the spec's, plus `outbox`), beside ENGINE_OPTIONS. */
const PLUGIN_OPTIONS = ['replicators', 'verbose', 'persistReplicatorLog', 'replicatorLogResource', 'logErrors', 'outbox', 'resourceFilter', 'resourceAllowlist', 'resourceBlocklist', 'resourceNames'];
/** Taken by s3db.js's Plugin base class. */
const HOST_OPTIONS = ['logLevel', 'logger', 'namespace', 'instanceId', 'slug', 'storage', 'resources', 'database', 'client'];
/** The stock plugin's knobs for its own promise pools: accepted so a switch needs no edit; the
 * engine's `concurrency` (lanes per replicator) is what bounds parallel writes here. */
const STOCK_ONLY_OPTIONS = ['replicatorConcurrency', 'stopConcurrency'];
export const KNOWN_OPTIONS = [...ENGINE_OPTIONS, ...PLUGIN_OPTIONS, ...HOST_OPTIONS, ...STOCK_ONLY_OPTIONS];

/** pino's level names, which `logLevel` takes (s3db.js hands it to the plugin's pino logger too). */
export const LOG_LEVELS = ['silent', 'fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/**
 * How much of the engine's logging reaches the plugin's logger: `logLevel`, else 'debug' with
 * `verbose: true`, else 'warn'. Called before s3db.js's Plugin constructor, whose pino logger
 * would otherwise fail on an unknown level with a message that does not name the option.
 */
export function engineLogLevel({ logLevel, verbose } = {}) {
  if (logLevel === undefined || logLevel === null) return verbose ? 'debug' : 'warn';
  if (LOG_LEVELS.includes(logLevel)) return logLevel;
  const given = typeof logLevel === 'string' ? `"${logLevel}"` : `${typeof logLevel} ${JSON.stringify(logLevel)}`;
  throw new ReplicatorError(`Invalid ReplicatorPlugin configuration: logLevel: expected one of ${LOG_LEVELS.join(', ')}, got ${given}`, {
    code: 'ERR_CONFIG',
    description: `logLevel sets how much the plugin logs (the engine's retries, circuit transitions, schema sync, outbox replay). ${typeof logLevel === 'string' ? didYouMean(logLevel, LOG_LEVELS) : ''}Use one of: ${LOG_LEVELS.map((l) => `'${l}'`).join(', ')} (default 'warn', 'debug' with verbose: true).`,
    context: { option: 'logLevel', received: logLevel },
  });
}

/** Rejects an option name the plugin does not know, with the closest known one as a hint. */
export function checkOptionNames(options) {
  const unknown = Object.keys(options).filter((k) => !KNOWN_OPTIONS.includes(k));
  if (unknown.length === 0) return;
  const name = unknown[0];
  throw new ReplicatorError(`Invalid ReplicatorPlugin configuration: '${name}' is not an option`, {
    code: 'ERR_CONFIG',
    description: `Unknown option '${name}'. ${didYouMean(name, KNOWN_OPTIONS)}The plugin takes: ${[...ENGINE_OPTIONS, ...PLUGIN_OPTIONS].join(', ')} (and s3db.js's ${HOST_OPTIONS.slice(0, 4).join(', ')}).`,
    context: { option: name },
  });
}

/**
 * @returns {{ json: string, functions: Function[], clients: Map<number, object> }}
 *   clients: replicator index → the Database object given as `client`.
 */
export function prepareOptions(options) {
  checkOptionNames(options);
  const functions = [];
  const clients = new Map();
  const engine = {};
  for (const key of ENGINE_OPTIONS) {
    if (options[key] !== undefined) engine[key] = options[key];
  }
  engine.logLevel = engineLogLevel(options);
  const { replicators } = options;
  if (replicators !== undefined && !Array.isArray(replicators)) {
    throw new ReplicatorError('Invalid ReplicatorPlugin configuration: replicators must be an array', {
      code: 'ERR_CONFIG',
      description: 'The replicators option must be an array of replicator configurations.\nHow to fix: new ReplicatorPlugin({ replicators: [{ driver: \'s3db\', resources: [\'users\'], config: { connectionString: \'memory://backup\' } }] })',
      context: { option: 'replicators', received: typeof replicators },
    });
  }
  engine.replicators = (replicators ?? []).map((rep, index) => {
    if (!rep || typeof rep !== 'object' || Array.isArray(rep)) {
      throw new ReplicatorError(`Invalid ReplicatorPlugin configuration: replicators[${index}] must be an object`, {
        code: 'ERR_CONFIG',
        description: `Each replicator is an object such as { driver: 's3db', resources: ['users'], config: { ... } }.`,
        context: { option: `replicators[${index}]` },
      });
    }
    const unknown = Object.keys(rep).filter((k) => !REPLICATOR_KEYS.has(k));
    if (unknown.length > 0) {
      throw new ReplicatorError(`Invalid ReplicatorPlugin configuration: replicators[${index}].${unknown[0]} is not an option`, {
        code: 'ERR_CONFIG',
        description: `Unknown option '${unknown[0]}'. ${didYouMean(unknown[0], [...REPLICATOR_KEYS])}A replicator takes: ${[...REPLICATOR_KEYS].join(', ')}; driver settings go inside config.`,
        context: { option: `replicators[${index}].${unknown[0]}` },
      });
    }
    const config = { ...(rep.config ?? {}) };
    const client = rep.client ?? config.client;
    if (client !== undefined && client !== null) {
      if (typeof client !== 'object' || typeof client.createResource !== 'function') {
        throw new ReplicatorError(`Invalid ReplicatorPlugin configuration: replicators[${index}].client is not a Database`, {
          code: 'ERR_CONFIG',
          description: 'client must be a connected s3db.js Database instance (or use config.connectionString).',
          context: { option: `replicators[${index}].client` },
        });
      }
      clients.set(index, client);
      config.client = true;
    } else {
      delete config.client;
    }
    const out = { driver: rep.driver, resources: replaceFunctions(rep.resources, functions), config };
    if (rep.id !== undefined) out.id = rep.id;
    if (rep.enabled !== undefined) out.enabled = rep.enabled;
    return out;
  });
  let json;
  try {
    json = JSON.stringify(engine);
  } catch (cause) {
    throw new ReplicatorError('Invalid ReplicatorPlugin configuration: options are not serialisable', {
      code: 'ERR_CONFIG',
      description: `Replicator options must be plain data (strings, numbers, objects, arrays) and functions: ${cause.message}`,
      context: {},
      cause,
    });
  }
  return { json, functions, clients };
}

function replaceFunctions(value, functions) {
  if (typeof value === 'function') {
    functions.push(value);
    return { $fn: functions.length - 1 };
  }
  if (Array.isArray(value)) return value.map((v) => replaceFunctions(v, functions));
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = replaceFunctions(v, functions);
    return out;
  }
  return value;
}
