// Process-level cost of a phase: CPU seconds of the whole process (all threads, so the Rust
// engine's too), CPU seconds of the JavaScript (main) thread alone, peak RSS, and write I/O
// (write-type syscalls and bytes, Linux /proc/self/io; sockets included).

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

/** Linux /proc/self/io counters (all threads): syscw, wchar, write_bytes...; {} elsewhere. */
export function ioCounters() {
  try {
    return Object.fromEntries(readFileSync('/proc/self/io', 'utf8').trim().split('\n').map((line) => {
      const [key, value] = line.split(':');
      return [key.trim(), Number(value)];
    }));
  } catch {
    return {};
  }
}

export function startCost() {
  const cpu = process.cpuUsage();
  const js = jsThreadCpuSec();
  const io = ioCounters();
  return () => {
    const d = process.cpuUsage(cpu);
    const io2 = ioCounters();
    return {
      // write-type syscalls (write, writev, pwrite, sendmsg... to files and sockets) and the
      // bytes they passed; storageBytes = what the process caused to be sent to the storage layer.
      writeCalls: io2.syscw - io.syscw,
      writeBytes: io2.wchar - io.wchar,
      storageBytes: io2.write_bytes - io.write_bytes,
      cpuSec: (d.user + d.system) / 1e6,
      jsCpuSec: jsThreadCpuSec() - js,
      // getrusage's ru_maxrss: the process's peak resident set, in kB on Linux.
      peakRssMB: process.resourceUsage().maxRSS / 1024,
    };
  };
}
