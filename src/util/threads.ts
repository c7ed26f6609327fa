/**
 * ONNX Runtime intra-op threads: 0 lets ORT choose (one per physical core); at most THREADS_PER_CORE
 * per logical CPU core. Far more spinning threads than cores make every step crawl: 1024 threads on
 * 2 cores ran for minutes without finishing a step. The CLI's --threads and the library's `threads`
 * option share this rule.
 */
import * as os from "node:os";

export const THREADS_PER_CORE = 4;

export function maxThreads(): number {
  return Math.max(1, os.availableParallelism()) * THREADS_PER_CORE;
}

/** Why `n` threads are too many here, or null when they are not. */
export function tooManyThreads(n: number): string | null {
  const max = maxThreads();
  if (n <= max) return null;
  const cores = max / THREADS_PER_CORE;
  return `${n} is more than ${THREADS_PER_CORE} per CPU core (${cores} core${cores === 1 ? "" : "s"} here: at most ${max}; 0 lets ONNX Runtime choose)`;
}
