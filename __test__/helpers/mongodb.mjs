// The MongoDB-wire test server (SecantusDB, started by scripts/services/mongodb.sh) read and
// set up through a real MongoDB client: pymongo, from the server's own venv (no MongoDB
// driver in the npm dependencies).
import { execFileSync } from 'node:child_process';
import { homedir } from 'node:os';
import path from 'node:path';

export const MONGODB_URL = process.env.S3DB_REPLICATOR_MONGODB_URL ?? 'mongodb://127.0.0.1:45670/?directConnection=true';
const SERVICES = process.env.S3DB_REPLICATOR_SERVICES ?? path.join(homedir(), '.cache', 's3db-replicator', 'services');
const PYTHON = path.join(SERVICES, 'mongodb', 'venv', 'bin', 'python');

/** The server's host and port, for the spec's host/port form. */
export const MONGODB_HOST = new URL(MONGODB_URL.replace(/^mongodb:/, 'http:')).hostname;
export const MONGODB_PORT = Number(new URL(MONGODB_URL.replace(/^mongodb:/, 'http:')).port || 27017);

/** The server's URL with credentials and a database: `mongodb://user:pass@host:port/db?...`. */
export function mongoUrl(database, user = null, password = null) {
  const u = new URL(MONGODB_URL.replace(/^mongodb:/, 'http:'));
  if (user) {
    u.username = encodeURIComponent(user);
    u.password = encodeURIComponent(password);
  }
  u.pathname = `/${database}`;
  return u.toString().replace(/^http:/, 'mongodb:');
}

const PRELUDE = `
import json, sys, pymongo
from bson import json_util
args = json.loads(sys.argv[1])
client = pymongo.MongoClient(args['url'], serverSelectionTimeoutMS=5000)
db = client[args['db']] if args.get('db') else None
`;

function py(script, args) {
  const out = execFileSync(PYTHON, ['-c', PRELUDE + script, JSON.stringify({ url: MONGODB_URL, ...args })], { encoding: 'utf8' });
  return JSON.parse(out);
}

/** Creates a user with readWrite on `database` (the server then checks the password). */
export function createUser(database, user, password) {
  return py(`
db.command('createUser', args['user'], pwd=args['password'], roles=['readWrite'])
print('true')`, { db: database, user, password });
}

/** Every document of a collection (relaxed extended JSON: numbers as numbers, dates as { $date }), sorted by _id. */
export function findAll(database, collection) {
  return py(`
docs = list(db[args['coll']].find({}).sort('_id', 1))
print(json_util.dumps(docs, json_options=json_util.RELAXED_JSON_OPTIONS))`, { db: database, coll: collection });
}

/** The BSON type of each field of one document (`int`, `float`, `bool`, `dict`, `list`, `str`, `NoneType`, `datetime`). */
export function fieldTypes(database, collection, id) {
  return py(`
d = db[args['coll']].find_one({'_id': args['id']})
print(json.dumps({k: type(v).__name__ for k, v in d.items()}))`, { db: database, coll: collection, id });
}

/** The names of a collection's indexes. */
export function indexNames(database, collection) {
  return py(`
print(json.dumps(sorted(i['name'] for i in db[args['coll']].list_indexes())))`, { db: database, coll: collection });
}

export const uniqueDb = (prefix) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
