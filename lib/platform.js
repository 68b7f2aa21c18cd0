// The napi-rs name of this machine's platform (`linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`...):
// the suffix of the addon file `s3db-replicator.<platform>.node` and of the prebuilt package
// `s3db-replicator-<platform>`. Shared by the install script and the loader.

export function platformTriple({ platform, arch } = process) {
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.()?.header?.glibcVersionRuntime;
    if (arch === 'arm') return `linux-arm-${glibc ? 'gnueabihf' : 'musleabihf'}`;
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  if (platform === 'darwin') return `darwin-${arch}`;
  return `${platform}-${arch}`;
}

export const BINARY_NAME = 's3db-replicator';

/** The addon file the install script builds next to package.json. */
export const addonFile = (triple = platformTriple()) => `${BINARY_NAME}.${triple}.node`;

/** The per-platform npm package holding a prebuilt addon. */
export const prebuiltPackage = (triple = platformTriple()) => `${BINARY_NAME}-${triple}`;
