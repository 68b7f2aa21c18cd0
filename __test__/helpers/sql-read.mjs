// Reading whole rows back from PostgreSQL and MariaDB through their command-line clients, for
// tables whose column names are hostile (quotes, SQL keywords) and whose values are large:
// the helpers in sql.mjs assume plain column names and small results.
import { execFileSync } from 'node:child_process';

import { MYSQL_URL, PG_URL } from './sql.mjs';

const MAX_BUFFER = 256 * 1024 * 1024;

/** PostgreSQL identifier, quoted. */
export const pgIdent = (name) => `"${String(name).replaceAll('"', '""')}"`;
/** PostgreSQL string literal. */
export const pgLiteral = (value) => `'${String(value).replaceAll("'", "''")}'`;
/** MariaDB identifier, quoted. */
export const myIdent = (name) => `\`${String(name).replaceAll('`', '``')}\``;
/** MariaDB string literal (NO_BACKSLASH_ESCAPES is off on the test server: escape backslashes too). */
export const myLiteral = (value) => `'${String(value).replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;

/** Every row of a PostgreSQL table as objects keyed by column name, ordered by id. */
export function pgTable(table) {
  const sql = `SELECT coalesce(json_agg(row_to_json(t) ORDER BY t.id), '[]') FROM ${pgIdent(table)} t`;
  const out = execFileSync('psql', [PG_URL, '-tAqX', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', maxBuffer: MAX_BUFFER });
  return JSON.parse(out.trim() || '[]');
}

const my = new URL(MYSQL_URL);
const myArgs = ['-h', my.hostname, '-P', my.port || '3306', `-u${decodeURIComponent(my.username)}`, my.pathname.slice(1)];
const mySchema = my.pathname.slice(1);

function mariadb(sql) {
  return execFileSync('mariadb', [...myArgs, '--default-character-set=utf8mb4', '--max-allowed-packet=256M', '-N', '-r', '-e', sql], { encoding: 'utf8', maxBuffer: MAX_BUFFER });
}

/** Column names of a MariaDB table, in order. */
export function myColumns(table) {
  return mariadb(`SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ${myLiteral(mySchema)} AND TABLE_NAME = ${myLiteral(table)} ORDER BY ORDINAL_POSITION`)
    .split('\n').filter(Boolean);
}

/** Every row of a MariaDB table as objects keyed by column name, ordered by id. */
export function myTable(table) {
  const columns = myColumns(table);
  if (columns.length === 0) throw new Error(`MariaDB table ${table} does not exist`);
  const obj = columns.map((c) => `${myLiteral(c)}, ${myIdent(c)}`).join(', ');
  return mariadb(`SELECT JSON_OBJECT(${obj}) FROM ${myIdent(table)} ORDER BY ${myIdent('id')}`)
    .split('\n').filter(Boolean).map((line) => JSON.parse(line));
}
