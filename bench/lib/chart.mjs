// The results chart: throughput and lag distribution per scenario, stock beside ours, plus
// the engine path against its physical limit. Horizontal bars; PNG via lib/png.mjs.
// The bars of a group are `data.sides` (default stock and ours); the durability section draws
// its outbox variants with the same panels.

import { drawText, GLYPH_H, textWidth } from './font.mjs';
import { Bitmap } from './png.mjs';

const SIDES = [
  { key: 'stock', label: 'STOCK PLUGIN', color: [230, 140, 40] },
  { key: 'ours', label: 'OURS', color: [40, 110, 200] },
];
const AIM_COLOR = [200, 30, 30];
const INK = [30, 30, 30];
const GRID = [225, 225, 225];
const MUTED = [120, 120, 120];
const S = 2; // text scale
const LINE = GLYPH_H * S;
const WIDTH = 1240;
const LEFT = 280; // label column (fits "POSTGRES CONC-YIELD")
const RIGHT = 130; // room for value labels
const BAR = 14;
const PAIR_GAP = 3;
const GROUP_GAP = 14;

const fmt = (v) => (!Number.isFinite(v) ? 'N/A' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

function groupHeight(bars) {
  return BAR * bars + PAIR_GAP * (bars - 1) + GROUP_GAP;
}

function panelHeight(rows, bars) {
  return LINE * 2 + 16 + rows * groupHeight(bars) + LINE + 16;
}

/**
 * A panel of grouped bars (one per side); `scale` maps a value to [0, 1] and gives the axis
 * ticks; `aim`: a value marked with a red line.
 */
function panel(bm, top, title, rows, scale, draw, sides, aim) {
  drawText(bm, 20, top, title, INK, S);
  const y0 = top + LINE + 16;
  const x0 = LEFT;
  const x1 = WIDTH - RIGHT;
  const height = rows.length * groupHeight(sides.length);
  for (const tick of scale.ticks) {
    const x = x0 + scale.at(tick) * (x1 - x0);
    bm.vline(Math.round(x), y0 - 4, y0 + height, GRID);
    const label = scale.label(tick);
    drawText(bm, x - textWidth(label, S) / 2, y0 + height + 6, label, MUTED, S);
  }
  bm.vline(x0, y0 - 4, y0 + height, INK);
  rows.forEach((row, i) => {
    const y = y0 + i * groupHeight(sides.length);
    drawText(bm, 20, y + (sides.length * (BAR + PAIR_GAP) - PAIR_GAP) / 2 - LINE / 2 + 1, row.label, INK, S);
    sides.forEach((side, j) => draw(row[side.key], y + j * (BAR + PAIR_GAP), side.color, x0, x1));
  });
  if (Number.isFinite(aim)) {
    const x = Math.round(x0 + scale.at(aim) * (x1 - x0));
    bm.vline(x, y0 - 4, y0 + height, AIM_COLOR);
    bm.vline(x + 1, y0 - 4, y0 + height, AIM_COLOR);
  }
  return y0 + height + LINE + 20;
}

function linear(max) {
  const top = Math.max(1, Math.ceil(max * 4) / 4);
  const step = top <= 1.5 ? 0.25 : top <= 3 ? 0.5 : 1;
  const ticks = [];
  for (let t = 0; t <= top + 1e-9; t += step) ticks.push(Number(t.toFixed(2)));
  return { ticks, at: (v) => Math.min(1, Math.max(0, v / top)), label: (t) => String(t) };
}

function logarithmic(min, max) {
  const lo = Math.floor(Math.log10(Math.max(min, 0.01)));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(max, 0.1))));
  const ticks = [];
  for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  return {
    ticks,
    at: (v) => Math.min(1, Math.max(0, (Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo))),
    label: (t) => (t >= 1000 ? `${t / 1000}S` : `${t}MS`),
  };
}

/** A plain bar with its value written after it; `value` is a number or { value, note }. */
const bar = (bm, scale) => (item, y, color, x0, x1) => {
  const { value, note = '' } = typeof item === 'object' && item !== null ? item : { value: item };
  if (!Number.isFinite(value)) {
    drawText(bm, x0 + 6, y + (BAR - LINE) / 2 + 1, 'N/A', MUTED, S);
    return;
  }
  const x = x0 + scale.at(value) * (x1 - x0);
  bm.fill(x0 + 1, y, Math.max(1, x - x0), BAR, color);
  drawText(bm, x + 6, y + (BAR - LINE) / 2 + 1, `${fmt(value)}${note}`, note ? [200, 30, 30] : INK, S);
};

/** "  37% DELIVERED" when part of the changes never reached the destination. */
const deliveredNote = (fraction) => (Number.isFinite(fraction) && fraction < 1 ? `  ONLY ${Math.floor(fraction * 100)}% DELIVERED` : '');

/**
 * @param {{ title: string, subtitle: string,
 *   scenarios: { label, stock: { rate, delivered, lag }, ours: { rate, delivered, lag } }[],
 *   engine: { label, stock: number, ours: number }[],
 *   sides?: { key, label, color }[], aim?: number, rateTitle?: string, engineTitle?: string }} data
 *   rate: delivered/s ÷ source rate; delivered: fraction of changes delivered (worst run);
 *   lag: { p50, p99, max } in ms; engine: rows/s ÷ limit. `sides` (default stock, ours):
 *   the keys of each scenario / engine row drawn as bars; `aim`: a value marked in the
 *   throughput and engine panels.
 */
export function renderChart(data) {
  const { scenarios, engine } = data;
  const sides = data.sides ?? SIDES;
  const values = (rows, f) => rows.flatMap((row) => sides.map((side) => f(row[side.key])));
  const height = 16 + LINE * 2 + 32 + panelHeight(scenarios.length, sides.length) * 2 + (engine.length ? panelHeight(engine.length, sides.length) : 0);
  const bm = new Bitmap(WIDTH, height);
  let y = 16;
  drawText(bm, 20, y, data.title, INK, S);
  y += LINE + 8;
  drawText(bm, 20, y, data.subtitle, MUTED, S);
  const legend = sides.map((side) => BAR + 8 + textWidth(side.label, S) + 30);
  let lx = WIDTH - 20 - legend.reduce((sum, w) => sum + w, 0);
  sides.forEach((side, i) => {
    bm.fill(lx, y, BAR, BAR, side.color);
    drawText(bm, lx + BAR + 8, y + 1, side.label, INK, S);
    lx += legend[i];
  });
  y += LINE + 24;

  const rateScale = linear(Math.max(...values(scenarios, (side) => side.rate).filter(Number.isFinite), 1));
  const rated = (side) => ({ value: side.rate, note: deliveredNote(side.delivered) });
  y = panel(bm, y, data.rateTitle ?? 'DELIVERED CHANGES/S ÷ SOURCE OWN WRITE RATE  (HIGHER IS BETTER, 1 = KEEPS UP)', scenarios.map((s) => ({
    label: s.label, ...Object.fromEntries(sides.map((side) => [side.key, rated(s[side.key])])),
  })), rateScale, bar(bm, rateScale), sides, data.aim);

  const lagValues = values(scenarios, (side) => side.lag).filter(Boolean);
  const lagScale = logarithmic(Math.min(...lagValues.map((l) => l.p50).filter(Number.isFinite), 1), Math.max(...lagValues.map((l) => l.max).filter(Number.isFinite), 10));
  y = panel(bm, y, 'LAG, WRITE TO DESTINATION (LOG): BAR = P50, LINE TO P99, TICK = MAX  (LOWER IS BETTER)', scenarios.map((s) => ({
    label: s.label, ...Object.fromEntries(sides.map((side) => [side.key, s[side.key].lag])),
  })), lagScale, (lag, yy, color, x0, x1) => {
    if (!lag || !Number.isFinite(lag.p50)) {
      drawText(bm, x0 + 6, yy + (BAR - LINE) / 2 + 1, 'NOTHING DELIVERED', [200, 30, 30], S);
      return;
    }
    const px = (v) => x0 + lagScale.at(v) * (x1 - x0);
    bm.fill(x0 + 1, yy, Math.max(1, px(lag.p50) - x0), BAR, color);
    bm.fill(px(lag.p50), yy + BAR / 2 - 2, Math.max(1, px(lag.p99) - px(lag.p50)), 4, color);
    bm.fill(px(lag.max) - 1, yy, 3, BAR, color);
    drawText(bm, px(lag.max) + 8, yy + (BAR - LINE) / 2 + 1, `P99 ${fmt(lag.p99)} MS`, INK, S);
  }, sides);

  if (engine.length) {
    const engineScale = linear(Math.max(...values(engine, (v) => v).filter(Number.isFinite), 1));
    panel(bm, y, data.engineTitle ?? 'ENGINE PATH (BATCH API, NO SOURCE WRITES): ROWS/S ÷ PHYSICAL LIMIT', engine, engineScale, bar(bm, engineScale), sides, data.aim);
  }
  return bm.toPNG();
}
