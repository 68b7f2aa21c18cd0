// Code blocks of README.md, with the HTML comment right before each (for readme-test markers).

import { readFileSync } from 'node:fs';

export const README = new URL('../../README.md', import.meta.url);

/**
 * @returns {Array<{ lang: string, code: string, line: number, skip: string | null }>}
 *   `line` is 1-based (the opening fence); `skip` is the reason of a
 *   `<!-- readme-test: skip (reason) -->` comment on the last non-blank line before the fence.
 */
export function readmeBlocks(text = readFileSync(README, 'utf8')) {
  const lines = text.split('\n');
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const start = i;
    const body = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    let before = start - 1;
    while (before >= 0 && lines[before].trim() === '') before--;
    const marker = before >= 0 ? /<!--\s*readme-test:\s*skip\s*\(([^)]*)\)\s*-->/.exec(lines[before]) : null;
    blocks.push({ lang: open[1], code: `${body.join('\n')}\n`, line: start + 1, skip: marker ? marker[1].trim() : null });
  }
  return blocks;
}
