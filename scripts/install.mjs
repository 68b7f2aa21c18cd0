// `npm install` hook of the published package: keeps a prebuilt addon for this platform if the
// package ships one, otherwise builds it from source with cargo (a Rust toolchain is needed).
// Set S3DB_REPLICATOR_SKIP_BUILD=1 to skip (e.g. when the binary comes from elsewhere).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

function abi() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.()?.header?.glibcVersionRuntime;
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

const target = path.join(root, `s3db-replicator.${abi()}.node`);
if (process.env.S3DB_REPLICATOR_SKIP_BUILD || existsSync(target)) process.exit(0);

console.log(`s3db-replicator: no prebuilt addon for ${abi()}; building from source with cargo (a few minutes)...`);
const build = spawnSync('cargo', ['build', '--release', '--lib'], { cwd: root, stdio: 'inherit' });
if (build.error || build.status !== 0) {
  console.error('s3db-replicator: the build failed. Install Rust (https://rustup.rs) and run `npm rebuild s3db-replicator`.');
  process.exit(1);
}
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
const lib = { win32: 's3db_replicator.dll', darwin: 'libs3db_replicator.dylib' }[process.platform] ?? 'libs3db_replicator.so';
copyFileSync(path.join(targetDir, 'release', lib), target);
console.log(`s3db-replicator: built ${path.basename(target)}`);
