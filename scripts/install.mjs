// `npm install` hook of the published package. Nothing to do when the addon for this platform is
// already there (the prebuilt package s3db-replicator-<platform>, or a built
// s3db-replicator.<platform>.node); otherwise builds it from source with cargo (needs Rust).
//
// - The cargo target directory is a cache outside the package: CARGO_TARGET_DIR if set, else
//   $XDG_CACHE_HOME/s3db-replicator/target-install (default ~/.cache/...). Nothing is left in
//   node_modules/s3db-replicator but the addon file.
// - npm hides an install script's output unless --foreground-scripts, so progress also goes to
//   the terminal (/dev/tty) when there is one, and cargo's full output to a log file.
// - S3DB_REPLICATOR_SKIP_BUILD=1 skips the build; S3DB_REPLICATOR_BUILD_PROFILE=debug builds a
//   (faster to build, slower to run) debug addon. `npm rebuild s3db-replicator` always rebuilds.

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, utimesSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { addonFile, platformTriple, prebuiltPackage } from '../lib/platform.js';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const triple = platformTriple();
const addon = path.join(root, addonFile(triple));
const started = Date.now();

// ---- output: stderr, and the terminal when npm captures stderr ----

let tty = null;
try {
  if (!process.stderr.isTTY && process.platform !== 'win32') tty = openSync('/dev/tty', 'w');
} catch {
  tty = null;
}

function say(text) {
  const line = `s3db-replicator: ${text}\n`;
  process.stderr.write(line);
  if (tty !== null) {
    try {
      writeSync(tty, line);
    } catch {
      tty = null;
    }
  }
}

function done(code) {
  if (tty !== null) closeSync(tty);
  process.exit(code);
}

const elapsed = () => {
  const s = Math.round((Date.now() - started) / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
};

// ---- is there anything to do? ----

const rebuild = process.env.npm_command === 'rebuild';

if (process.env.S3DB_REPLICATOR_SKIP_BUILD) {
  say('S3DB_REPLICATOR_SKIP_BUILD is set: not building the native addon.');
  done(0);
}

function prebuiltInstalled() {
  try {
    createRequire(path.join(root, 'package.json')).resolve(`${prebuiltPackage(triple)}/package.json`);
    return true;
  } catch {
    return false;
  }
}

if (!rebuild && prebuiltInstalled()) done(0);
if (!rebuild && existsSync(addon)) done(0);

// ---- build from source ----

const profile = process.env.S3DB_REPLICATOR_BUILD_PROFILE === 'debug' ? 'debug' : 'release';
const cacheHome = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
const baseDir = process.env.INIT_CWD || process.cwd();
const defaultTargetDir = path.join(cacheHome, 's3db-replicator', 'target-install');
let targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(baseDir, process.env.CARGO_TARGET_DIR) : defaultTargetDir;
if (isInside(targetDir, root)) {
  say(`CARGO_TARGET_DIR (${targetDir}) is inside the package; building in ${defaultTargetDir} instead.`);
  targetDir = defaultTargetDir;
}

function isInside(dir, parent) {
  const rel = path.relative(parent, dir);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

if (spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status !== 0) {
  say(`no prebuilt addon for ${triple} and no Rust toolchain (cargo) to build one.`);
  say('How to fix: install Rust from https://rustup.rs, then run `npm rebuild s3db-replicator --foreground-scripts`;');
  say(`or install the prebuilt package ${prebuiltPackage(triple)} if it is published for your platform.`);
  done(1);
}

mkdirSync(targetDir, { recursive: true });
const logFile = path.join(targetDir, 's3db-replicator-build.log');
const log = openSync(logFile, 'w');
say(`no prebuilt addon for ${triple}: building it from source with cargo (${profile}); this takes several minutes.`);
say(`cargo target directory (a cache, reused by later installs): ${targetDir}`);
say(`full build log: ${logFile}`);

// npm extracts every file with the same old mtime (1985), so cargo's freshness check could keep
// a cached build of an earlier tarball installed at this same path: touching the crate root
// makes cargo recompile this crate (its dependencies stay cached).
const now = new Date();
utimesSync(path.join(root, 'src', 'lib.rs'), now, now);

const args = ['build', '--lib', '--locked', ...(profile === 'release' ? ['--release'] : [])];
const child = spawn('cargo', args, {
  cwd: root,
  env: { ...process.env, CARGO_TARGET_DIR: targetDir, CARGO_TERM_COLOR: 'never', CARGO_TERM_PROGRESS_WHEN: 'never' },
  stdio: ['ignore', log, log],
});

const heartbeat = setInterval(() => say(`still building (${elapsed()}${lastCompiling()})...`), 30_000);

function lastCompiling() {
  try {
    const lines = readFileSync(logFile, 'utf8').split('\n').filter((l) => /^\s*Compiling /.test(l));
    return lines.length > 0 ? `, ${lines.at(-1).trim()}` : '';
  } catch {
    return '';
  }
}

function tail(file, count) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-count).join('\n');
  } catch {
    return '';
  }
}

child.on('error', (error) => finish(error));
child.on('exit', (code, signal) => finish(code === 0 ? null : new Error(signal ? `cargo was killed (${signal})` : `cargo exited with status ${code}`)));

let finished = false;
function finish(error) {
  if (finished) return;
  finished = true;
  clearInterval(heartbeat);
  closeSync(log);
  // Never leave a cargo target directory inside an installed package (older versions built
  // there); a development checkout's own target/ is left alone.
  const stray = path.join(root, 'target');
  if (root.split(path.sep).includes('node_modules') && existsSync(stray)) rmSync(stray, { recursive: true, force: true });
  if (error) {
    process.stderr.write(`${tail(logFile, 30)}\n`);
    say(`the build failed after ${elapsed()}: ${error.message}. Full log: ${logFile}`);
    say('How to fix: install or update Rust (https://rustup.rs, stable >= 1.89), then `npm rebuild s3db-replicator --foreground-scripts`.');
    done(1);
  }
  const lib = { win32: 's3db_replicator.dll', darwin: 'libs3db_replicator.dylib' }[process.platform] ?? 'libs3db_replicator.so';
  const built = path.join(targetDir, profile, lib);
  // Copy next to the final name, then rename: a process loading the addon never sees half a file.
  const partial = `${addon}.partial`;
  copyFileSync(built, partial);
  renameSync(partial, addon);
  say(`built ${path.basename(addon)} in ${elapsed()}.`);
  done(0);
}
