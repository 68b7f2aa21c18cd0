// Process-level cost of a phase: CPU seconds of the whole process (all threads, so the Rust
// engine's too), CPU seconds of the JavaScript (main) thread alone, and peak RSS.

import { readFileSync } from 'node:fs';

/**
 * CPU seconds the main (JavaScript) thread has run so far, from Linux's per-thread schedstat
 * (nanoseconds on CPU); NaN elsewhere. The JS thread is what a plugin takes from the app.
 */
export function jsThreadCpuSec() {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
  } catch {
    return NaN;
  }
}

export function startCost() {
  const cpu = process.cpuUsage();
  const js = jsThreadCpuSec();
  return () => {
    const d = process.cpuUsage(cpu);
    return {
      cpuSec: (d.user + d.system) / 1e6,
      jsCpuSec: jsThreadCpuSec() - js,
      // getrusage's ru_maxrss: the process's peak resident set, in kB on Linux.
      peakRssMB: process.resourceUsage().maxRSS / 1024,
    };
  };
}
