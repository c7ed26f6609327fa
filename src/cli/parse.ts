/** Flag parsing helpers that turn bad values into one-line HarnessErrors naming the flag. */
import { HarnessError, ExitCode } from "../errors";
import { THREADS_PER_CORE, maxThreads, tooManyThreads } from "../util/threads";
import { RUNTIMES, DEFAULT_RUNTIME, createRuntime, Runtime } from "../runtime/index";
import { PortRuntime, DEFAULT_PORT_TIMEOUT_S } from "../runtime/port";

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
  if (!/^\d+$/.test(s))
    throw new HarnessError(`--seed: ${JSON.stringify(v)} is not an integer from 0 to 18446744073709551615`, ExitCode.usage);
  const n = BigInt(s);
  if (n > 0xffffffffffffffffn) throw new HarnessError(`--seed: ${s} is larger than 2^64 - 1`, ExitCode.usage);
  return n;
}

export { THREADS_PER_CORE, maxThreads } from "../util/threads";

export const RUNTIME_HELP = `what runs the ONNX components: ${RUNTIMES.map((r) => `${r.name} (${r.describe})`).join("; ")}`;

/**
 * --runtime: a fresh runtime by name (a repeated flag takes its last value); the caller closes it.
 * An interrupt (`signal`) closes it at once, so a call in flight (minutes on a software WebGPU
 * adapter) ends with its browser or worker instead of holding the exit until it returns.
 */
export function runtimeFlag(v: unknown, signal?: AbortSignal): Runtime {
  const name = Array.isArray(v) ? v[v.length - 1] : v;
  const runtime = createRuntime(name === undefined ? DEFAULT_RUNTIME : String(name), "--runtime");
  signal?.addEventListener("abort", () => void runtime.close().catch(() => undefined), { once: true });
  return runtime;
}

export const PORT_HELP =
  "COMMAND ARGS: run the components in this program, which speaks the port protocol (docs/port-protocol.md; ports/ has adapters for onnxruntime, OpenVINO and PyTorch); stages and components it does not run are reported as not covered";
export const PORT_TIMEOUT_HELP = `seconds each call to the --port program may take (handshake, load, run) before its process group is ended (default ${DEFAULT_PORT_TIMEOUT_S})`;

/**
 * The runtime of a command: --port COMMAND (a port process) or --runtime NAME; both at once name
 * two runtimes and are refused. `log` receives the port's stderr lines (with --verbose).
 */
export function runtimeFromFlags(
  argv: readonly string[],
  v: { runtime?: unknown; port?: unknown; portTimeout?: unknown },
  signal?: AbortSignal,
  log?: (line: string) => void,
): Runtime {
  const last = (x: unknown) => (Array.isArray(x) ? x[x.length - 1] : x);
  const port = last(v.port);
  if (port === undefined) return runtimeFlag(v.runtime, signal);
  if (argv.some((a) => a === "--runtime" || a.startsWith("--runtime="))) {
    throw new HarnessError(
      "--port: --runtime names another runtime; a port runs its components itself, so give one of the two",
      ExitCode.usage,
    );
  }
  const t = last(v.portTimeout);
  const timeout = t === undefined ? DEFAULT_PORT_TIMEOUT_S : numFlag("--port-timeout", t, 0.001, 7 * 24 * 3600);
  return new PortRuntime({ command: String(port), timeoutMs: timeout * 1000, signal, log });
}

export const THREADS_HELP = `ONNX Runtime intra-op threads: 0 (one per core) up to ${THREADS_PER_CORE} x the CPU cores (${maxThreads()} here)`;

export function threadsFlag(v: unknown): number {
  const max = maxThreads();
  const n = typeof v === "number" ? v : typeof v === "string" && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 0)
    throw new HarnessError(`--threads: ${JSON.stringify(v)} is not an integer from 0 to ${max}`, ExitCode.usage);
  const tooMany = tooManyThreads(n);
  if (tooMany) throw new HarnessError(`--threads: ${tooMany}`, ExitCode.usage);
  return n;
}

/**
 * A number flag's value as typed, for messages that quote it ("-2", "abc"): yargs has already made
 * it a number (NaN for text). The last occurrence wins, as in yargs; the parsed value otherwise.
 */
export function asTyped(argv: readonly string[], flag: string, parsed: unknown): unknown {
  let v = parsed;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${flag}` && i + 1 < argv.length) v = argv[i + 1];
    else if (argv[i].startsWith(`--${flag}=`)) v = argv[i].slice(flag.length + 3);
  }
  return v;
}
