/** What a report format is: one object with where it goes and how it renders (the registry: ./reporters.ts). */
import type { Report } from "../types";

/** Environment variables a format may read to find where it goes (GITHUB_STEP_SUMMARY). */
export type ReporterEnv = Readonly<Record<string, string | undefined>>;

export interface RenderContext {
  /** the bytes of a picture the report names, confined to the report folder (null: not there) */
  readonly readAsset: (relPath: string) => Buffer | null;
}

export interface Reporter {
  /** its name, for messages and for turning it off */
  readonly name: string;
  /** a file in the report folder; or, for a destination outside it, where the environment says (null: not written this run) */
  readonly file: string | ((env: ReporterEnv) => string | null);
  /** add to the end of the file instead of replacing it (GitHub's job summary collects every step's) */
  readonly append?: boolean;
  /** a CLI flag that turns it off: `--no-<flag>` (default on) */
  readonly optOut?: { readonly flag: string; readonly describe: string };
  render(report: Report, ctx: RenderContext): string | Uint8Array;
}
