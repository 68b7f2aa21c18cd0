// The bridge the engine calls to run user transform / shouldReplicate functions, one call per
// batch. Every user function is awaited inside try/catch: a throw, a rejection or a wrong
// return type becomes an error for that record only, never for the batch or the process.

/**
 * @param {Function[]} functions the table built by prepareOptions (index = $fn id)
 * @returns {(json: string) => Promise<string>}
 */
export function createCallbackBridge(functions) {
  const runOne = async (call) => {
    try {
      if (call.shouldReplicate !== undefined) {
        const keep = await functions[call.shouldReplicate](call.data, call.action);
        if (!keep) return '{"skip":true}';
      }
      if (call.transform === undefined) return '{}';
      const result = await functions[call.transform](call.data);
      if (result === null || result === undefined) return '{"skip":true}';
      if (typeof result !== 'object' || Array.isArray(result)) {
        return JSON.stringify({ error: `transform must return an object, null or undefined (got ${Array.isArray(result) ? 'an array' : typeof result})` });
      }
      return `{"data":${JSON.stringify(result)}}`;
    } catch (error) {
      return JSON.stringify({ error: messageOf(error) });
    }
  };
  return async (json) => {
    const calls = JSON.parse(json);
    const parts = await Promise.all(calls.map(runOne));
    return `[${parts.join(',')}]`;
  };
}

export function messageOf(error) {
  if (error instanceof Error) return error.message;
  try {
    return typeof error === 'string' ? error : JSON.stringify(error);
  } catch {
    return String(error);
  }
}
