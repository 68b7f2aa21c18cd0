// ReplicatorError: the error every public method and the constructor throw, with the shape the
// spec documents: name, message, description (what is wrong and how to fix it) and context.

export class ReplicatorError extends Error {
  /**
   * @param {string} message brief summary
   * @param {{ description?: string, context?: object, code?: string, cause?: unknown }} [details]
   */
  constructor(message, { description, context = {}, code = 'ERR_REPLICATOR', cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ReplicatorError';
    this.code = code;
    this.description = description ?? message;
    this.context = context;
  }
}

/** Turns a `checkConfig()` problem into a ReplicatorError. */
export function configError(problem) {
  return new ReplicatorError(`Invalid ReplicatorPlugin configuration: ${problem.path}: ${problem.reason}`, {
    code: 'ERR_CONFIG',
    description: `${problem.reason}.\nOption: ${problem.path}\nHow to fix: ${problem.hint}`,
    context: { option: problem.path, reason: problem.reason, suggestion: problem.hint },
  });
}
