// Hides credentials in text before it is printed (the CLI's messages, progress and errors).
//   scheme://user:password@host → scheme://***@host   (also scheme://token@host)
//   ?secretAccessKey=...&sessionToken=...            → ?secretAccessKey=***&sessionToken=***
// plus every literal secret registered with `secretsOf` (s3db.js echoes connection strings in
// some of its own errors, sometimes decoded, so the known values are replaced wherever they are).

// The userinfo may hold an unencoded '/' (AWS secret keys do): up to the last '@' of the token.
const USERINFO = /([a-z][a-z0-9+.-]*:\/\/)([^\s@"'<>]*)@/gi;
const SECRET_PARAM = /([?&;](?:[\w.-]*(?:secret|password|passwd|pwd|token|signature|credential|apikey|api_key|authorization)[\w.-]*)=)([^&\s"'#]*)/gi;

/**
 * @param {unknown} text
 * @param {Iterable<string>} [secrets] literal values to hide as well
 * @returns {string}
 */
export function redact(text, secrets = []) {
  let out = String(text);
  for (const secret of secrets) {
    if (typeof secret === 'string' && secret.length >= 3) out = out.split(secret).join('***');
  }
  return out.replace(USERINFO, '$1***@').replace(SECRET_PARAM, '$1***');
}

/** URL schemes whose userinfo without a password is a user name, not a credential (a NATS or
 * HTTP URL's lone userinfo is a token). */
const DATABASE_SCHEME = /^(postgres|postgresql|mysql|mariadb|mongodb|mongodb\+srv)$/i;

/**
 * The secret parts of a connection string or URL (password or token, secret query parameters),
 * raw and decoded, for `redact(text, secrets)`.
 * @param {unknown} value
 * @returns {string[]}
 */
export function secretsOf(value) {
  if (typeof value !== 'string') return [];
  const found = [];
  const add = (s) => {
    if (!s) return;
    found.push(s);
    try {
      const decoded = decodeURIComponent(s);
      if (decoded !== s) found.push(decoded);
    } catch {
      // not percent-encoded
    }
  };
  const userinfo = /^([a-z][a-z0-9+.-]*):\/\/([^\s@]*)@/i.exec(value)?.slice(1);
  if (userinfo) {
    const [scheme, info] = userinfo;
    const colon = info.indexOf(':');
    // user:password → the password; a lone token (https://token@host) is the secret itself,
    // but in a database URL (postgres://postgres@host) it is a user name: redacting it would
    // turn every 'postgres' in a log line, the replicator id 'postgresql' too, into '***'.
    if (colon >= 0) add(info.slice(colon + 1));
    else if (!DATABASE_SCHEME.test(scheme)) add(info);
    // HTTP clients send URL credentials as `Authorization: Basic base64(user:password)`,
    // which a server may quote back in an error.
    if (colon >= 0) found.push(basic(...info.split(/:(.*)/s, 2).map(decoded)));
  }
  for (const match of value.matchAll(SECRET_PARAM)) add(match[2]);
  // Longest first, so a secret containing another is replaced whole.
  return [...new Set(found)].filter((s) => s.length >= 3).sort((a, b) => b.length - a.length);
}

function decoded(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The credentials of `Authorization: Basic ...`. */
function basic(user, password) {
  return Buffer.from(`${user}:${password}`).toString('base64');
}

const SECRET_KEY = /secret|password|passwd|token|apikey|api_key|credential|authorization|nkey|seed/i;

/**
 * Every credential-looking value in a configuration (connection-string passwords and tokens,
 * values under keys such as `password`, `token`, `secretAccessKey`), for `redact(text, secrets)`.
 * Database clients (objects with `createResource`) are not walked.
 * @param {unknown} value
 * @param {Set<string>} [into]
 * @returns {Set<string>}
 */
export function secretsIn(value, into = new Set(), key = '') {
  if (typeof value === 'string') {
    for (const s of secretsOf(value)) into.add(s);
    if (SECRET_KEY.test(key) && value.length >= 4) into.add(value);
  } else if (Array.isArray(value)) {
    for (const v of value) secretsIn(v, into, key);
  } else if (value && typeof value === 'object' && typeof value.createResource !== 'function') {
    for (const [k, v] of Object.entries(value)) secretsIn(v, into, k);
    // Basic auth ({ username, password }) travels as base64(username:password).
    if (typeof value.username === 'string' && typeof value.password === 'string') into.add(basic(value.username, value.password));
  }
  return into;
}
