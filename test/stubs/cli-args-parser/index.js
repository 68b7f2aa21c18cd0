// Development-only stand-in: s3db.js imports this package only from its CLI, which we never run.
export function parse() { return { args: [], flags: {} }; }
export default { parse };
