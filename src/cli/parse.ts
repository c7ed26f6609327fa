/** Flag parsing helpers that turn bad values into one-line HarnessErrors naming the flag. */
import * as os from "node:os";
import { HarnessError, ExitCode } from "../errors";

export function intFlag(flag: string, v: unknown, min: number, max: number): number {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new HarnessError(`${flag}: ${JSON.stringify(v)} is not an integer from ${min} to ${max}`, ExitCode.usage);
  }
  return n;
}

export function numFlag(flag: string, v: unknown, min: number, max: number): number {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new HarnessError(`${flag}: ${JSON.stringify(v)} is not a number from ${min} to ${max}`, ExitCode.usage);
  }
  return n;
}

/** A torch seed: any integer from 0 to 2^64 - 1 (manual_seed's range). */
export function seedFlag(v: unknown): bigint {
  const s = String(v).trim();
  if (!/^\d+$/.test(s)) throw new HarnessError(`--seed: ${JSON.stringify(v)} is not an integer from 0 to 18446744073709551615`, ExitCode.usage);
  const n = BigInt(s);
  if (n > 0xffffffffffffffffn) throw new HarnessError(`--seed: ${s} is larger than 2^64 - 1`, ExitCode.usage);
  return n;
}

/**
 * ONNX Runtime intra-op threads: 0 lets ORT choose (one per physical core); at most THREADS_PER_CORE
 * per logical CPU core. Far more spinning threads than cores make every step crawl: --threads 1024
 * on 2 cores ran for minutes without finishing a step.
 */
export const THREADS_PER_CORE = 4;

export function maxThreads(): number {
  return Math.max(1, os.availableParallelism()) * THREADS_PER_CORE;
}

export const THREADS_HELP = `ONNX Runtime intra-op threads: 0 (one per core) up to ${THREADS_PER_CORE} x the CPU cores (${maxThreads()} here)`;

export function threadsFlag(v: unknown): number {
  const max = maxThreads();
  const n = typeof v === "number" ? v : typeof v === "string" && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 0) throw new HarnessError(`--threads: ${JSON.stringify(v)} is not an integer from 0 to ${max}`, ExitCode.usage);
  if (n > max) {
    const cores = max / THREADS_PER_CORE;
    throw new HarnessError(`--threads: ${n} is more than ${THREADS_PER_CORE} per CPU core (${cores} core${cores === 1 ? "" : "s"} here: at most ${max}; 0 lets ONNX Runtime choose)`, ExitCode.usage);
  }
  return n;
}
