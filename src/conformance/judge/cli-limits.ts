/**
 * Limits given on the command line (`conformance --max-rel-l2 'unet:*=1e-3' --atol 'vae_*=2e-3'`):
 * each becomes an override of the tolerance file, applied after the file's own overrides, with the
 * flag as its reason, so the report names it next to every case it judged (source
 * "override unet:*", reason "command line: --max-rel-l2 unet:*=0.001"). The tolerances then no longer are the file's bytes, so the
 * report's tolerance sha256 is taken of the resulting object (report merge compares it, and shards
 * run with different flags are not merged).
 *
 * `--atol` bounds maxAbs (the largest |ours - ref|), `--max-rel-l2` bounds relL2 (||ours - ref|| /
 * ||ref||). There is no `--rtol`: numpy's allclose tests |a - b| <= atol + rtol |b| element by
 * element, and the metrics are computed before any limit is known, so an rtol could only be
 * approximated; the relative bound here is the whole-tensor relL2.
 */
import { HarnessError, ExitCode } from "../../errors";
import { ToleranceFile } from "./tolerances";

const CLI_LIMIT_FLAGS: Readonly<Record<string, string>> = { atol: "maxAbs", "max-rel-l2": "relL2" };

/** `GLOB=VALUE` -> [glob, value]; the value a positive finite number. */
export function parseLimitFlag(flag: string, text: string): [string, number] {
  const eq = text.lastIndexOf("=");
  const glob = eq > 0 ? text.slice(0, eq) : "";
  const raw = eq > 0 ? text.slice(eq + 1) : "";
  const value = Number(raw);
  if (!glob || raw.trim() === "" || !Number.isFinite(value) || value < 0) {
    throw new HarnessError(
      `--${flag}: ${JSON.stringify(text.slice(0, 80))} must be CASE_GLOB=VALUE with VALUE a number >= 0 (for example 'unet:*=1e-3')`,
      ExitCode.usage,
    );
  }
  return [glob, value];
}

export function withCommandLineLimits(t: ToleranceFile, flags: Readonly<Record<string, readonly string[]>>): ToleranceFile {
  const added: ToleranceFile["overrides"][number][] = [];
  for (const [flag, metric] of Object.entries(CLI_LIMIT_FLAGS)) {
    for (const text of flags[flag] ?? []) {
      const [glob, value] = parseLimitFlag(flag, text);
      added.push({ case: glob, limits: { [metric]: value }, reason: `command line: --${flag} ${glob}=${value}` });
    }
  }
  if (added.length === 0) return t;
  return { ...t, overrides: [...t.overrides, ...added], sha256: undefined, file: `${t.file ?? "(in memory)"} + command line` };
}
