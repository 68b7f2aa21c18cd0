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
  const userinfo = /^[a-z][a-z0-9+.-]*:\/\/([^\s@]*)@/i.exec(value);
  if (userinfo) {
    const colon = userinfo[1].indexOf(':');
    // user:password → the password; a lone token (scheme://token@host) is the secret itself.
    add(colon >= 0 ? userinfo[1].slice(colon + 1) : userinfo[1]);
  }
  for (const match of value.matchAll(SECRET_PARAM)) add(match[2]);
  // Longest first, so a secret containing another is replaced whole.
  return [...new Set(found)].filter((s) => s.length >= 3).sort((a, b) => b.length - a.length);
}
