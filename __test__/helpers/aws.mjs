// The AWS-compatible test server (moto, started by scripts/services/moto.sh) read and set up
// through a real AWS client: boto3, from moto's own venv (no AWS SDK in the npm dependencies).
import { execFileSync } from 'node:child_process';
import { homedir } from 'node:os';
import path from 'node:path';

export const AWS_ENDPOINT = process.env.S3DB_REPLICATOR_AWS_ENDPOINT ?? 'http://127.0.0.1:45660';
const SERVICES = process.env.S3DB_REPLICATOR_SERVICES ?? path.join(homedir(), '.cache', 's3db-replicator', 'services');
const PYTHON = path.join(SERVICES, 'moto', 'venv', 'bin', 'python');

/** The settings every AWS replicator of the tests gets (static test credentials). */
export const awsConfig = (endpoint = AWS_ENDPOINT) => ({
  region: 'us-east-1', endpoint, credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
});

const PRELUDE = `
import boto3, json, sys
from decimal import Decimal
args = json.loads(sys.argv[1])
kw = dict(endpoint_url=args['endpoint'], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')
def plain(v):
    if isinstance(v, Decimal): return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict): return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list): return [plain(x) for x in v]
    return v
`;

function py(script, args) {
  const out = execFileSync(PYTHON, ['-c', PRELUDE + script, JSON.stringify({ endpoint: AWS_ENDPOINT, ...args })], { encoding: 'utf8' });
  return JSON.parse(out);
}

/** Creates a queue (FIFO when the name ends in .fifo); resolves with its URL. */
export function createQueue(name) {
  return py(`
sqs = boto3.client('sqs', **kw)
attrs = {'FifoQueue': 'true'} if args['name'].endswith('.fifo') else {}
print(json.dumps(sqs.create_queue(QueueName=args['name'], Attributes=attrs)['QueueUrl']))`, { name });
}

/** Every message of a queue, `{ body, attributes, groupId, dedupId }`, received and deleted. */
export function drainQueue(url) {
  return py(`
sqs = boto3.client('sqs', **kw)
out, empty = [], 0
while empty < 2:
    r = sqs.receive_message(QueueUrl=args['url'], MaxNumberOfMessages=10, MessageAttributeNames=['All'], MessageSystemAttributeNames=['All'])
    ms = r.get('Messages', [])
    if not ms:
        empty += 1
        continue
    for m in ms:
        sqs.delete_message(QueueUrl=args['url'], ReceiptHandle=m['ReceiptHandle'])
        out.append({'body': json.loads(m['Body']), 'attributes': {k: v.get('StringValue') for k, v in m.get('MessageAttributes', {}).items()},
                    'groupId': m['Attributes'].get('MessageGroupId'), 'dedupId': m['Attributes'].get('MessageDeduplicationId')})
print(json.dumps(out))`, { url });
}

/** Creates a table keyed by `hash` (and `range`), strings unless `types` says N. */
export function createTable(name, hash, range = null, types = {}) {
  return py(`
ddb = boto3.client('dynamodb', **kw)
keys = [(args['hash'], 'HASH')] + ([(args['range'], 'RANGE')] if args['range'] else [])
ddb.create_table(TableName=args['name'], BillingMode='PAY_PER_REQUEST',
    KeySchema=[{'AttributeName': k, 'KeyType': t} for k, t in keys],
    AttributeDefinitions=[{'AttributeName': k, 'AttributeType': args['types'].get(k, 'S')} for k, _ in keys])
print('true')`, { name, hash, range, types });
}

/** Every item of a table as plain JSON, sorted by its JSON text. */
export function scanTable(name) {
  const items = py(`
t = boto3.resource('dynamodb', **kw).Table(args['name'])
print(json.dumps([plain(i) for i in t.scan()['Items']]))`, { name });
  return items.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}

export function createBucket(name) {
  return py(`
boto3.client('s3', **kw).create_bucket(Bucket=args['name'])
print('true')`, { name });
}

export const unique = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

/** The keys of a bucket's objects under `prefix`. */
export function listObjects(bucket, prefix = '') {
  return py(`
s3 = boto3.client('s3', **kw)
keys = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=args['bucket'], Prefix=args['prefix']):
    keys += [o['Key'] for o in page.get('Contents', [])]
print(json.dumps(keys))`, { bucket, prefix });
}
