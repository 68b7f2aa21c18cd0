// Reads SQL destinations back through the servers' own command-line clients (no extra npm
// dependency): PostgreSQL and MariaDB on loopback, SQLite files for libSQL.
import { execFileSync } from 'node:child_process';

export const PG_URL = process.env.S3DB_REPLICATOR_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const MYSQL_URL = process.env.S3DB_REPLICATOR_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

/** Rows of a PostgreSQL query as objects (via row_to_json). */
export function pgRows(sql) {
  const out = execFileSync('psql', [PG_URL, '-tAqX', '-v', 'ON_ERROR_STOP=1', '-c', `SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM (${sql}) q`], { encoding: 'utf8' });
  return JSON.parse(out.trim() || '[]');
}

export function pgExec(sql) {
  execFileSync('psql', [PG_URL, '-qX', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8' });
}

const my = new URL(MYSQL_URL);
const myArgs = ['-h', my.hostname, '-P', my.port || '3306', `-u${decodeURIComponent(my.username)}`, my.pathname.slice(1)];

/** Rows of a MariaDB/MySQL query as objects (via JSON_OBJECT). */
export function myRows(table, columns, where = '1=1') {
  const obj = columns.map((c) => `'${c}', \`${c}\``).join(', ');
  const out = execFileSync('mariadb', [...myArgs, '-N', '-r', '-e', `SELECT JSON_OBJECT(${obj}) FROM \`${table}\` WHERE ${where} ORDER BY id`], { encoding: 'utf8' });
  return out.split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

export function myExec(sql) {
  execFileSync('mariadb', [...myArgs, '-e', sql], { encoding: 'utf8' });
}

export function sqliteRows(file, sql) {
  const out = execFileSync('sqlite3', ['-json', file, sql], { encoding: 'utf8' });
  return JSON.parse(out.trim() || '[]');
}

export const unique = (prefix) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
