/**
 * The machine a run computed on, as far as numerics go: the CPU model and the instruction-set
 * features that select other kernels (AVX2, AVX-512, VNNI, AMX), and the OS. Float32 results move
 * with these (another summation order, another fused kernel), so every report records them beside
 * the reference set's own (scripts/refgen/spread.py writes the same fields into the manifest).
 */
import * as fs from "node:fs";
import * as os from "node:os";

/** The ISA features that change which kernels onnxruntime and PyTorch run, in /proc/cpuinfo's names. */
const KERNEL_ISA = [
  "avx2",
  "fma",
  "f16c",
  "avx512f",
  "avx512bw",
  "avx512_vnni",
  "avx512_bf16",
  "avx_vnni",
  "amx_tile",
  "amx_bf16",
] as const;

export interface MachineInfo {
  readonly model: string;
  /** the KERNEL_ISA features the CPU has ([] where /proc/cpuinfo cannot be read) */
  readonly isa: readonly string[];
  readonly os: string;
}

let cached: MachineInfo | null = null;

export function describeMachine(): MachineInfo {
  if (cached) return cached;
  let flags = new Set<string>();
  try {
    // /proc/cpuinfo is small, regular and Linux's own; elsewhere the ISA stays unknown
    const text = fs.readFileSync("/proc/cpuinfo", "utf8");
    const line = text.split("\n").find((l) => /^flags\s*:/.test(l));
    if (line)
      flags = new Set(
        line
          .slice(line.indexOf(":") + 1)
          .trim()
          .split(/\s+/),
      );
  } catch {
    /* not Linux, or not readable */
  }
  cached = { model: os.cpus()[0]?.model ?? "unknown", isa: KERNEL_ISA.filter((f) => flags.has(f)), os: `${os.type()} ${os.release()}` };
  return cached;
}

/** "AMD EPYC (avx2, fma, f16c)" */
export function machineText(m: { readonly model: string; readonly isa?: readonly string[] }): string {
  return `${m.model}${m.isa && m.isa.length ? ` (${m.isa.join(", ")})` : ""}`;
}

/**
 * Whether two machines may round differently: another CPU model or another kernel ISA. Where either
 * side does not say, nothing is claimed.
 */
export function machinesDiffer(
  a: { readonly model: string; readonly isa?: readonly string[] },
  b: { readonly model: string; readonly isa?: readonly string[] } | undefined,
): boolean {
  if (!b) return false;
  if (a.model !== b.model) return true;
  return !!a.isa && !!b.isa && a.isa.join(",") !== b.isa.join(",");
}
